import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { after, test } from 'node:test';
import { errorKind } from '../errors.ts';
import { anonymous } from '../registry/credentials.ts';
import { sendError, startFaultServer } from '../registry/testing/fault-server.ts';
import { RegistryAccess } from './registries.ts';
import { AuthPolicy, NO_AUTH } from './registry-auth.ts';
import { normalizeImageRef, resolveImage } from './resolve.ts';

const sha = (b: string) => `sha256:${createHash('sha256').update(b).digest('hex')}`;
const manifest = JSON.stringify({
  schemaVersion: 2,
  mediaType: 'application/vnd.oci.image.manifest.v1+json',
  config: { mediaType: 'application/vnd.oci.image.config.v1+json', digest: sha('c'), size: 1 },
  layers: [],
});
const armManifest = `${manifest} `;
const index = (platforms: Array<[string, string, string]>) =>
  JSON.stringify({
    schemaVersion: 2,
    mediaType: 'application/vnd.oci.image.index.v1+json',
    manifests: platforms.map(([body, os, architecture]) => ({
      mediaType: 'application/vnd.oci.image.manifest.v1+json',
      digest: sha(body),
      size: body.length,
      platform: { os, architecture },
    })),
  });
const multi = index([
  [armManifest, 'linux', 'arm64'],
  [manifest, 'linux', 'amd64'],
]);
const armOnly = index([[armManifest, 'linux', 'arm64']]);

let failuresLeft = 0;
const server = await startFaultServer((req, res) => {
  const path = req.url ?? '';
  const send = (body: string, type: string) => {
    res.writeHead(200, {
      'content-type': type,
      'docker-content-digest': sha(body),
      'content-length': Buffer.byteLength(body),
    });
    res.end(req.method === 'HEAD' ? undefined : body);
  };
  if (path === '/v2/') return res.writeHead(200).end('{}');
  if (path.includes('/flaky/') && failuresLeft-- > 0) return sendError(res, 503, 'UNAVAILABLE', 'try later');
  // A registry whose storage blinks answers 500, as the anchor's test injects.
  if (path.includes('/blinks/') && failuresLeft-- > 0)
    return sendError(res, 500, 'UNKNOWN', 'storage blinked');
  if (path.includes('/unimplemented/') && failuresLeft-- > 0)
    return sendError(res, 501, 'UNSUPPORTED', 'not here');
  if (path.includes('/busy/')) return sendError(res, 429, 'TOOMANYREQUESTS', 'slow down');
  if (path.includes('/private/')) return sendError(res, 401, 'UNAUTHORIZED', 'who are you');
  if (path.endsWith(`/manifests/${sha(armManifest)}`))
    return send(armManifest, 'application/vnd.oci.image.manifest.v1+json');
  if (path.includes('/multi/')) return send(multi, 'application/vnd.oci.image.index.v1+json');
  if (path.includes('/armonly/')) return send(armOnly, 'application/vnd.oci.image.index.v1+json');
  if (['/flaky/', '/blinks/', '/unimplemented/', '/app/'].some((p) => path.includes(p)))
    return send(manifest, 'application/vnd.oci.image.manifest.v1+json');
  return sendError(res, 404, 'MANIFEST_UNKNOWN', 'no such manifest');
});
const access = new RegistryAccess({ hosts: {}, installation: anonymous });
const policy = new AuthPolicy(NO_AUTH, { base: 'x.io/b', workspace: 'x.io/w' }, anonymous);
after(async () => {
  await access.close();
  await server.close();
});
const amd64 = { os: 'linux', architecture: 'amd64' };
const resolve = (ref: string, retry = false) => resolveImage(access.forPolicy(policy, retry), ref, amd64);
const kindAndMessage = async (p: Promise<unknown>) => {
  try {
    await p;
  } catch (err) {
    return [errorKind(err), (err as Error).message];
  }
  return ['ok', ''];
};

test('normalisation: Docker Hub names, default tag, a tag beside a digest dropped; bad refs InvalidArgument', () => {
  assert.deepEqual(normalizeImageRef('alpine'), {
    domain: 'docker.io',
    path: 'library/alpine',
    tag: 'latest',
  });
  const d = `sha256:${'a'.repeat(64)}`;
  assert.deepEqual(normalizeImageRef(`reg:5000/a:1@${d}`), { domain: 'reg:5000', path: 'a', digest: d });
  assert.throws(
    () => normalizeImageRef('repo/Upper'),
    (e) => errorKind(e) === 'InvalidArgument' && /cannot resolve base image ref/.test((e as Error).message),
  );
});

test('a manifest pins its own digest; an index the configured platform, even when asked by digest', async () => {
  assert.equal(await resolve(`${server.host}/app:1`), `${server.host}/app@${sha(manifest)}`);
  assert.equal(await resolve(`${server.host}/multi:1`), `${server.host}/multi@${sha(manifest)}`);
  assert.equal(await resolve(`${server.host}/multi@${sha(multi)}`), `${server.host}/multi@${sha(manifest)}`);
  assert.deepEqual(await kindAndMessage(resolve(`${server.host}/armonly:1`)), [
    'Internal',
    'cannot resolve image: no manifest for platform linux/amd64 found',
  ]);
});

test("the anchor's codes: not found, unauthenticated, too many requests, everything else internal", async () => {
  assert.deepEqual(await kindAndMessage(resolve(`${server.host}/nope:1`)), [
    'NotFound',
    'cannot resolve image',
  ]);
  assert.deepEqual(await kindAndMessage(resolve(`${server.host}/private/x:1`)), [
    'Unauthenticated',
    'cannot resolve image',
  ]);
  const [kind, message] = await kindAndMessage(resolve(`${server.host}/busy/x:1`));
  assert.equal(kind, 'Unavailable');
  assert.match(message as string, /^upstream registry responds with 'too many request': /);
});

test('use_retry_client: the plain client gives up at the first failure, the retrying one outlasts two', async () => {
  failuresLeft = 1;
  assert.equal((await kindAndMessage(resolve(`${server.host}/flaky/x:1`)))[0], 'Internal');
  failuresLeft = 2;
  assert.equal(await resolve(`${server.host}/flaky/x:1`, true), `${server.host}/flaky/x@${sha(manifest)}`);
  failuresLeft = 10;
  assert.equal((await kindAndMessage(resolve(`${server.host}/flaky/x:1`, true)))[0], 'Internal');
  failuresLeft = 0;
});

test('use_retry_client asks again after a 500, as the anchor does; never after a 501, nor without it', async () => {
  failuresLeft = 2;
  assert.equal(await resolve(`${server.host}/blinks/x:1`, true), `${server.host}/blinks/x@${sha(manifest)}`);
  failuresLeft = 1;
  assert.equal((await kindAndMessage(resolve(`${server.host}/blinks/x:1`)))[0], 'Internal');
  failuresLeft = 1;
  assert.equal((await kindAndMessage(resolve(`${server.host}/unimplemented/x:1`, true)))[0], 'Internal');
  assert.equal(failuresLeft, 0, 'asked once');
  failuresLeft = 0;
});
