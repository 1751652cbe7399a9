// Client authentication of the facade with real clients: containerd's ctr (`--user`) and skopeo
// (`--creds`, `--registry-token`) against Basic (htpasswd, bcrypt) and against Bearer tokens issued by a
// token server the test runs as the realm (ES256 JWTs, verified with its certificate). Wrong passwords,
// expired tokens, tokens for another repository and no credentials are refused with docker distribution's
// answer (401 UNAUTHORIZED with the challenge; insufficient_scope naming the scope a token lacks, which
// skopeo then asks the realm for); health, readiness and metrics stay open. Then the
// HTTPS listener: a rotated certificate is served to new connections, a bad pair is refused and the old
// one keeps serving.
import assert from 'node:assert/strict';
import { mkdir, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import bcrypt from 'bcryptjs';
import { pino } from 'pino';
import { Registry } from 'prom-client';
import { Agent, request } from 'undici';
import type { PasswordCheckOptions } from '../../src/facade/auth/client-auth.ts';
import { type FacadeApp, startFacade } from '../../src/server/facade.ts';
import { facadeConfigFrom } from '../../src/server/facade-config.ts';
import { startContainerd, type TestContainerd } from '../helpers/containerd.ts';
import { type ImageTools, imageTools, type PushedImage, pushBusybox } from '../helpers/images.ts';
import { runProcess, waitFor } from '../helpers/process.ts';
import { startRegistry, type TestRegistry } from '../helpers/registry.ts';
import { makeSelfSignedCert, servedCommonName } from '../helpers/tls-cert.ts';
import { removeTempDir, tempDir } from '../helpers/tmp.ts';
import { startTokenServer, type TokenServer } from '../helpers/token-server.ts';

const logger = pino({ level: 'silent' });

describe('facade client authentication', () => {
  let reg: TestRegistry;
  let busybox: PushedImage;
  let work: string;
  let ctrd: TestContainerd;
  let tools: ImageTools;
  let tokens: TokenServer;

  before(async () => {
    work = await tempDir('facade-auth');
    reg = await startRegistry();
    busybox = await pushBusybox(reg, 'base/busybox');
    ctrd = await startContainerd();
    tools = await imageTools();
    tokens = await startTokenServer({
      users: { alice: 'wonderland' },
      dir: work,
      service: 'strata-facade-test',
      // Anonymous requests get a token, but it grants nothing.
      policy: (user, scope) => (user === 'alice' && scope.name !== 'fixed/secret' ? scope.actions : []),
    });
    await writeFile(join(work, 'htpasswd'), `alice:${bcrypt.hashSync('wonderland', 6)}\n`);
    await writeFile(
      join(work, 'specs.json'),
      JSON.stringify({ ws1: { baseRef: busybox.ref }, secret: { baseRef: busybox.ref } }),
    );
  });

  after(async () => {
    await tokens?.stop();
    await tools?.cleanup();
    await ctrd?.stop();
    await reg?.stop();
    if (work) await removeTempDir(work);
  });

  async function facade(
    name: string,
    auth: Record<string, unknown>,
    extra: Record<string, unknown> = {},
    passwordChecks?: PasswordCheckOptions,
  ) {
    const dir = join(work, name);
    const config = facadeConfigFrom(
      {
        listen: '127.0.0.1:0',
        specProviders: { fixedFile: join(work, 'specs.json') },
        cache: { dir: join(dir, 'cache'), maxBytes: '1GiB' },
        auth,
        ...extra,
      },
      work,
    );
    return startFacade(config, {
      logger,
      registry: new Registry(),
      ...(passwordChecks && { passwordChecks }),
    });
  }

  const hostOf = (app: FacadeApp) => new URL(app.url).host;
  const skopeo = (args: string[]) => tools.skopeo(['inspect', '--tls-verify=false', '--no-tags', ...args]);

  async function refusal(p: Promise<unknown>, pattern: RegExp): Promise<void> {
    await assert.rejects(p, (err: Error) => {
      assert.match(err.message, pattern);
      return true;
    });
  }

  async function openEndpoints(app: FacadeApp): Promise<void> {
    for (const path of ['/healthz', '/readyz', '/metrics']) {
      const r = await fetch(`${app.url}${path}`);
      assert.equal(r.status, 200, path);
      await r.arrayBuffer();
    }
  }

  test('Basic (htpasswd): ctr --user and skopeo --creds pull; wrong password and no credentials are refused', async (t) => {
    const app = await facade('basic', { htpasswd: 'htpasswd', basicRealm: 'strata test' });
    t.after(() => app.close());
    const ref = `${hostOf(app)}/fixed/ws1:latest`;

    const root = await fetch(`${app.url}/v2/`);
    assert.equal(root.status, 401);
    assert.equal(root.headers.get('www-authenticate'), 'Basic realm="strata test",charset="UTF-8"');
    assert.equal(root.headers.get('docker-distribution-api-version'), 'registry/2.0');
    const body = (await root.json()) as { errors: { code: string }[] };
    assert.equal(body.errors[0]!.code, 'UNAUTHORIZED');
    // Every route is guarded, not only /v2/.
    const blob = await fetch(`${app.url}/v2/fixed/ws1/blobs/sha256:${'0'.repeat(64)}`);
    assert.equal(blob.status, 401);
    await blob.arrayBuffer();
    await openEndpoints(app);

    await ctrd.ctr(['images', 'pull', '--plain-http', '--user', 'alice:wonderland', ref]);
    const out = await ctrd.run(ref, 'auth-basic', ['echo', 'hello from basic']);
    assert.match(out, /hello from basic/);
    await ctrd.ctr(['images', 'rm', ref]);
    const inspected = JSON.parse(await skopeo(['--creds', 'alice:wonderland', `docker://${ref}`])) as {
      Layers: string[];
    };
    assert.equal(inspected.Layers.length, busybox.layers);

    await refusal(
      ctrd.ctr(['images', 'pull', '--plain-http', '--user', 'alice:wrong', ref], { timeoutMs: 60_000 }),
      /401 Unauthorized|unauthorized/i,
    );
    await refusal(
      ctrd.ctr(['images', 'pull', '--plain-http', ref], { timeoutMs: 60_000 }),
      /401 Unauthorized|unauthorized/i,
    );
    await refusal(
      skopeo(['--creds', 'alice:wrong', `docker://${ref}`]),
      /unauthorized|authentication required/i,
    );
    await refusal(skopeo(['--no-creds', `docker://${ref}`]), /unauthorized|authentication required/i);
  });

  test('Basic: a flood of wrong passwords from one address does not hold up another client', async (t) => {
    // Cost 9: each check takes tens of milliseconds on the worker, so the flood's 80 checks take seconds.
    await writeFile(join(work, 'htpasswd-costly'), `alice:${bcrypt.hashSync('wonderland', 9)}\n`);
    const app = await facade('flood', { htpasswd: 'htpasswd-costly' });
    t.after(() => app.close());
    const url = `${app.url}/v2/fixed/ws1/manifests/latest`;
    const basic = (user: string, password: string) =>
      `Basic ${Buffer.from(`${user}:${password}`).toString('base64')}`;
    const status = async (authorization: string, dispatcher?: Agent) => {
      const r = await request(url, { method: 'HEAD', headers: { authorization }, dispatcher });
      await r.body.dump();
      return r.statusCode;
    };
    await status(basic('alice', 'warm-up'));

    const flooder = new Agent({ localAddress: '127.0.0.2' });
    t.after(() => flooder.close());
    let floodDone = 0;
    const flood = Array.from({ length: 80 }, (_, i) =>
      status(basic('alice', `guess${i}`), flooder).finally(() => floodDone++),
    );
    await new Promise((r) => setTimeout(r, 300));
    // Another address's check waits for those running and about one more, not the rest of the flood.
    const before = floodDone;
    assert.equal(await status(basic('alice', 'wonderland')), 200);
    assert.ok(floodDone - before <= 6, `${floodDone - before} of ${80 - before} flood checks went first`);
    const ref = `${hostOf(app)}/fixed/ws1:latest`;
    await ctrd.ctr(['images', 'pull', '--plain-http', '--user', 'alice:wonderland', ref]);
    await ctrd.ctr(['images', 'rm', ref]);
    assert.ok(floodDone < 80, 'ctr pulled while the flood was still being checked');
    assert.deepEqual(new Set(await Promise.all(flood)), new Set([401]));
  });

  test('Basic: a check turned away from a full waiting room is 429 with Retry-After; skopeo waits as told and inspects', async (t) => {
    // The comparisons wait for the test's word: the room stays full until skopeo has been turned away once.
    let release = (): void => {};
    const held = new Promise<void>((resolve) => {
      release = resolve;
    });
    t.after(() => release());
    const app = await facade(
      'full-room',
      { htpasswd: 'htpasswd' },
      {},
      {
        maxWaiting: 2,
        compare: async (password, hash) => {
          await held;
          return bcrypt.compare(password, hash);
        },
      },
    );
    t.after(() => app.close());
    const url = `${app.url}/v2/fixed/ws1/manifests/latest`;
    const basic = (password: string) => `Basic ${Buffer.from(`alice:${password}`).toString('base64')}`;
    const refusals = async (): Promise<number> =>
      (await app.metrics.requests.get()).values
        .filter((v) => v.labels.status === '429')
        .reduce((n, v) => n + v.value, 0);

    // Two checks running and two waiting fill the room of this address's line; a fifth is turned away.
    const fillers = Array.from({ length: 5 }, (_, i) =>
      request(url, { method: 'GET', headers: { authorization: basic(`guess${i}`) } }),
    );
    const turnedAway = await Promise.race(
      fillers.map(async (p) => {
        const r = await p;
        return r.statusCode === 429 ? r : new Promise<never>(() => {});
      }),
    );
    assert.equal(turnedAway.headers['retry-after'], '1');
    const body = (await turnedAway.body.json()) as { errors: { code: string }[] };
    assert.equal(body.errors[0]!.code, 'TOOMANYREQUESTS');
    assert.equal(await refusals(), 1);

    // skopeo's manifest request from the same address is turned away too; once it has been, the room
    // empties, and skopeo's next try (after the Retry-After it was sent) gets its check.
    const inspected = runProcess(
      'skopeo',
      [
        '--insecure-policy',
        '--debug',
        'inspect',
        '--tls-verify=false',
        '--no-tags',
        '--creds',
        'alice:wonderland',
        `docker://${hostOf(app)}/fixed/ws1:latest`,
      ],
      { env: { ...process.env, ...tools.env }, timeoutMs: 120_000 },
    );
    await waitFor(async () => ((await refusals()) >= 2 ? true : undefined), 60_000, {
      what: "skopeo's request to be turned away",
    });
    release();
    const out = await inspected;
    assert.equal(out.code, 0, out.stderr.slice(-4000));
    assert.equal((JSON.parse(out.stdout) as { Layers: string[] }).Layers.length, busybox.layers);
    // containers/image read the header (without one it would have waited its own 2 s).
    assert.match(out.stderr, /Detected 'Retry-After' header \\"1\\"/);
    const answered = await Promise.all(fillers);
    for (const r of answered) if (r !== turnedAway) await r.body.dump();
    assert.deepEqual(answered.map((r) => r.statusCode).sort(), [401, 401, 401, 401, 429]);
  });

  test('Bearer: skopeo and ctr get tokens from the realm; expired, other-repository and anonymous tokens are refused', async (t) => {
    const app = await facade('bearer', {
      token: {
        realm: tokens.realm,
        service: tokens.service,
        issuer: tokens.issuer,
        keys: tokens.certFile,
      },
    });
    t.after(() => app.close());
    const host = hostOf(app);
    const ref = `${host}/fixed/ws1:latest`;

    const root = await fetch(`${app.url}/v2/`);
    assert.equal(root.status, 401);
    assert.equal(
      root.headers.get('www-authenticate'),
      `Bearer realm="${tokens.realm}",service="${tokens.service}"`,
    );
    await root.arrayBuffer();
    const manifest = await fetch(`${app.url}/v2/fixed/ws1/manifests/latest`);
    assert.equal(manifest.status, 401);
    assert.equal(
      manifest.headers.get('www-authenticate'),
      `Bearer realm="${tokens.realm}",service="${tokens.service}",scope="repository:fixed/ws1:pull"`,
    );
    await manifest.arrayBuffer();
    await openEndpoints(app);

    const before = tokens.requests;
    const inspected = JSON.parse(await skopeo(['--creds', 'alice:wonderland', `docker://${ref}`])) as {
      Layers: string[];
    };
    assert.equal(inspected.Layers.length, busybox.layers);
    assert.ok(tokens.requests > before, 'skopeo went to the realm');
    assert.ok(tokens.log.some((r) => r.user === 'alice' && r.scopes.includes('repository:fixed/ws1:pull')));

    await ctrd.ctr(['images', 'pull', '--plain-http', '--user', 'alice:wonderland', ref]);
    const out = await ctrd.run(ref, 'auth-bearer', ['echo', 'hello from bearer']);
    assert.match(out, /hello from bearer/);
    await ctrd.ctr(['images', 'rm', ref]);

    // Wrong password: the realm refuses, so there is no token.
    await refusal(skopeo(['--creds', 'alice:wrong', `docker://${ref}`]), /unauthorized|401/i);
    await refusal(
      ctrd.ctr(['images', 'pull', '--plain-http', '--user', 'alice:wrong', ref], { timeoutMs: 60_000 }),
      /unauthorized|401/i,
    );
    // No credentials: an anonymous token grants nothing here.
    await refusal(skopeo(['--no-creds', `docker://${ref}`]), /unauthorized.*does not grant pull/i);
    await refusal(
      ctrd.ctr(['images', 'pull', '--plain-http', ref], { timeoutMs: 60_000 }),
      /insufficient_scope/i,
    );
    // A user's token for a repository the realm does not grant them.
    await refusal(
      skopeo(['--creds', 'alice:wonderland', `docker://${host}/fixed/secret:latest`]),
      /unauthorized.*does not grant pull on repository fixed\/secret/i,
    );

    // Tokens presented as they are: one for another repository, and an expired one.
    const other = tokens.issue('alice', ['repository:fixed/other:pull']).token;
    await refusal(skopeo(['--registry-token', other, `docker://${ref}`]), /unauthorized/i);
    const denied = await fetch(`${app.url}/v2/fixed/ws1/manifests/latest`, {
      headers: { authorization: `Bearer ${other}` },
    });
    // As docker distribution answers a token without the scope: 401 naming the scope that is needed.
    assert.equal(denied.status, 401);
    assert.equal(
      denied.headers.get('www-authenticate'),
      `Bearer realm="${tokens.realm}",service="${tokens.service}",scope="repository:fixed/ws1:pull",error="insufficient_scope"`,
    );
    assert.equal(((await denied.json()) as { errors: { code: string }[] }).errors[0]!.code, 'UNAUTHORIZED');

    const lifetime = tokens.expiresIn;
    tokens.expiresIn = -120;
    const expired = tokens.issue('alice', ['repository:fixed/ws1:pull']).token;
    tokens.expiresIn = lifetime;
    await refusal(skopeo(['--registry-token', expired, `docker://${ref}`]), /unauthorized|401/i);
    const r = await fetch(`${app.url}/v2/fixed/ws1/manifests/latest`, {
      headers: { authorization: `Bearer ${expired}` },
    });
    assert.equal(r.status, 401);
    assert.match(r.headers.get('www-authenticate') ?? '', /error="invalid_token"/);
    const e = (await r.json()) as { errors: { code: string; message: string }[] };
    assert.equal(e.errors[0]!.code, 'UNAUTHORIZED');
    assert.match(e.errors[0]!.message, /expired/);
    // The same token, fresh, passes: the refusals above were about expiry and scope, nothing else.
    const good = tokens.issue('alice', ['repository:fixed/ws1:pull']).token;
    await skopeo(['--registry-token', good, `docker://${ref}`]);
  });

  test('a token without the scope: skopeo asks the realm again for the scope the 401 names and pulls; ctr says insufficient_scope', async (t) => {
    // A realm that refuses the first token asked for, as for a user granted access after a token was issued.
    const dir = join(work, 'late-grant');
    await mkdir(dir);
    let refuseNext = false;
    const late = await startTokenServer({
      users: { alice: 'wonderland' },
      dir,
      service: 'strata-facade-late',
      policy: (_user, scope) => {
        if (!refuseNext) return scope.actions;
        refuseNext = false;
        return [];
      },
    });
    t.after(() => late.stop());
    const app = await facade('late-grant', {
      token: { realm: late.realm, service: late.service, issuer: late.issuer, keys: late.certFile },
    });
    t.after(() => app.close());
    const ref = `${hostOf(app)}/fixed/ws1:latest`;

    refuseNext = true;
    const inspected = JSON.parse(await skopeo(['--creds', 'alice:wonderland', `docker://${ref}`])) as {
      Layers: string[];
    };
    assert.equal(inspected.Layers.length, busybox.layers);
    // The second token request carries the scope the challenge named.
    const asked = late.log.filter((r) => r.user === 'alice').map((r) => r.scopes);
    assert.ok(asked.length >= 2, JSON.stringify(asked));
    assert.ok(asked[1]!.includes('repository:fixed/ws1:pull'), JSON.stringify(asked));

    // containerd 1.6 tries the request once more with the token it holds, then gives up naming the error
    // (with a 403 it said only "403 Forbidden"); it drops that token, so the next pull asks afresh.
    refuseNext = true;
    await refusal(
      ctrd.ctr(['images', 'pull', '--plain-http', '--user', 'alice:wonderland', ref], { timeoutMs: 60_000 }),
      /insufficient_scope/,
    );
    await ctrd.ctr(['images', 'pull', '--plain-http', '--user', 'alice:wonderland', ref]);
    await ctrd.ctr(['images', 'rm', ref]);
  });

  test('both: Basic credentials and Bearer tokens are each accepted', async (t) => {
    const app = await facade('both', {
      htpasswd: 'htpasswd',
      token: { realm: tokens.realm, service: tokens.service, issuer: tokens.issuer, keys: tokens.certFile },
    });
    t.after(() => app.close());
    const url = `${app.url}/v2/fixed/ws1/manifests/latest`;
    const accept =
      'application/vnd.oci.image.manifest.v1+json, application/vnd.docker.distribution.manifest.v2+json';
    const root = await fetch(`${app.url}/v2/`);
    assert.match(root.headers.get('www-authenticate') ?? '', /^Bearer realm=.*, Basic realm=/);
    await root.arrayBuffer();
    const basic = await fetch(url, {
      headers: { accept, authorization: `Basic ${Buffer.from('alice:wonderland').toString('base64')}` },
    });
    assert.equal(basic.status, 200);
    await basic.arrayBuffer();
    const bearer = await fetch(url, {
      headers: {
        accept,
        authorization: `Bearer ${tokens.issue('alice', ['repository:fixed/ws1:pull']).token}`,
      },
    });
    assert.equal(bearer.status, 200);
    await bearer.arrayBuffer();
  });

  test('HTTPS: a rotated certificate is served to new connections; a bad pair is refused and the old one stays', async (t) => {
    const certFile = join(work, 'tls.crt');
    const keyFile = join(work, 'tls.key');
    const makeCert = (cn: string, cert = certFile, key = keyFile) =>
      makeSelfSignedCert({ keyFile: key, certFile: cert, cn, ip: '127.0.0.1', days: 2 });
    await makeCert('first');
    const app = await facade('tls', { htpasswd: 'htpasswd' }, { tls: { cert: certFile, key: keyFile } });
    t.after(() => app.close());
    assert.match(app.url, /^https:/);
    const port = Number(new URL(app.url).port);
    const servedCn = () => servedCommonName(port);
    assert.equal(await servedCn(), 'first');
    // A real client over TLS with credentials.
    await skopeo(['--creds', 'alice:wonderland', `docker://${hostOf(app)}/fixed/ws1:latest`]);

    await makeCert('second');
    await waitFor(async () => (await servedCn()) === 'second', 10_000, { what: 'the new certificate' });

    // A certificate whose key is another one's: refused, "second" keeps serving, also after SIGHUP's reload.
    await makeCert('third', join(work, 'other.crt'), join(work, 'other.key'));
    await writeFile(certFile, await readFile(join(work, 'other.crt')));
    const refusedTls = async () =>
      (await app.metrics.reloads.get()).values.find(
        (v) => v.labels.what === 'tls' && v.labels.result === 'refused',
      )?.value ?? 0;
    await waitFor(async () => (await refusedTls()) === 1, 10_000, { what: 'the refused reload' });
    await app.reload();
    assert.equal(await servedCn(), 'second');
    assert.equal(await refusedTls(), 1, 'a refused version is reported once');
  });
});
