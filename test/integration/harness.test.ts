// The test harness itself: real registries in each auth mode, the token server, images built locally and
// read back with skopeo (and run by containerd), and cleanup of every process, port and temp dir.
import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import { readFile, writeFile } from 'node:fs/promises';
import { createServer } from 'node:net';
import { join } from 'node:path';
import { test } from 'node:test';
import { errorKind } from '../../src/errors.ts';
import {
  pushBusybox,
  pushMultiLayer,
  pushTwoPlatformIndex,
  skopeoCopy,
  skopeoInspect,
} from '../helpers/images.ts';
import { freePort, isListening } from '../helpers/ports.ts';
import { runCommand, spawnServer, waitFor } from '../helpers/process.ts';
import { startRegistry, type TestRegistry } from '../helpers/registry.ts';
import { Cleanup, removeTempDir, tempDir } from '../helpers/tmp.ts';
import { parseScope } from '../helpers/token-server.ts';

const USERS = { alice: 'wonder-land', bob: 'b0b:with:colons' };
const basic = (user: string, password: string): string =>
  `Basic ${Buffer.from(`${user}:${password}`).toString('base64')}`;

async function get(url: string, headers: Record<string, string> = {}): Promise<Response> {
  return fetch(url, { headers, signal: AbortSignal.timeout(10_000) });
}

function portOf(reg: TestRegistry): number {
  return Number(reg.host.slice(reg.host.lastIndexOf(':') + 1));
}

function isAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

function decodeJwt(token: string): { header: Record<string, unknown>; claims: Record<string, unknown> } {
  const [h, c] = token.split('.');
  return {
    header: JSON.parse(Buffer.from(h!, 'base64url').toString('utf8')) as Record<string, unknown>,
    claims: JSON.parse(Buffer.from(c!, 'base64url').toString('utf8')) as Record<string, unknown>,
  };
}

async function assertStopped(reg: TestRegistry): Promise<void> {
  assert.equal(await isListening(portOf(reg)), false, `registry ${reg.host} still accepts connections`);
  assert.equal(existsSync(reg.dir), false, `registry dir ${reg.dir} still exists`);
}

test('freePort gives a port that can be bound on 127.0.0.1', async () => {
  const port = await freePort();
  assert.ok(port > 0 && port < 65536);
  const server = createServer();
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, '127.0.0.1', resolve);
  });
  assert.equal(await isListening(port), true);
  await new Promise<void>((resolve) => server.close(() => resolve()));
  assert.equal(await isListening(port), false);
});

test('registry without auth: /v2/ answers 200 and the port closes on stop', async (t) => {
  const started = performance.now();
  const reg = await startRegistry({ t });
  t.diagnostic(`none: started in ${Math.round(performance.now() - started)} ms`);
  assert.match(reg.host, /^127\.0\.0\.1:\d+$/);
  assert.equal(reg.url, `http://${reg.host}`);
  assert.equal(reg.creds, undefined);
  const res = await get(`${reg.url}/v2/`);
  assert.equal(res.status, 200);
  assert.equal(res.headers.get('docker-distribution-api-version'), 'registry/2.0');
  const config = JSON.parse(await readFile(join(await reg.dockerConfig(), 'config.json'), 'utf8'));
  assert.deepEqual(config, { auths: {} });
  await reg.stop();
  await reg.stop(); // idempotent
  await assertStopped(reg);
});

test('registry with basic auth: 401 with a Basic challenge, bcrypt users accepted', async (t) => {
  const started = performance.now();
  const reg = await startRegistry({ auth: { mode: 'basic', users: USERS }, t });
  t.diagnostic(`basic: started in ${Math.round(performance.now() - started)} ms`);
  const anonymous = await get(`${reg.url}/v2/`);
  assert.equal(anonymous.status, 401);
  assert.match(anonymous.headers.get('www-authenticate') ?? '', /^Basic realm="[^"]+"/);
  assert.equal((await get(`${reg.url}/v2/`, { authorization: basic('alice', USERS.alice) })).status, 200);
  // A password containing colons: only the first colon separates user from password.
  assert.equal((await get(`${reg.url}/v2/`, { authorization: basic('bob', USERS.bob) })).status, 200);
  assert.equal((await get(`${reg.url}/v2/`, { authorization: basic('alice', 'wrong') })).status, 401);
  assert.equal((await get(`${reg.url}/v2/`, { authorization: basic('mallory', USERS.alice) })).status, 401);
  const htpasswd = await readFile(join(reg.dir, 'htpasswd'), 'utf8');
  assert.doesNotMatch(htpasswd, /wonder-land/, 'passwords are stored hashed');
  assert.match(htpasswd, /^alice:\$2y\$/m);

  // The docker config it writes is one real clients accept.
  const image = await pushBusybox(reg, 'team/busybox', 'v1');
  const configDir = await reg.dockerConfig();
  await assert.rejects(skopeoInspect(image.ref, { raw: true }), 'anonymous inspect is refused');
  const out = await runCommand('skopeo', [
    'inspect',
    '--tls-verify=false',
    '--authfile',
    join(configDir, 'config.json'),
    '--raw',
    `docker://${image.ref}`,
  ]);
  assert.equal(JSON.parse(out).layers.length, 1);
  await reg.stop();
  await assertStopped(reg);
  assert.equal(existsSync(configDir), false, 'docker config dir removed with the registry');
});

test('registry with token auth: Bearer challenge, tokens from the token server', async (t) => {
  const started = performance.now();
  const reg = await startRegistry({ auth: { mode: 'token', users: USERS, expiresIn: 120 }, t });
  t.diagnostic(`token: started in ${Math.round(performance.now() - started)} ms`);
  const ts = reg.tokenServer;
  assert.ok(ts);

  const challenge = (await get(`${reg.url}/v2/`)).headers.get('www-authenticate') ?? '';
  assert.equal(challenge, `Bearer realm="${ts.realm}",service="${ts.service}"`);

  const before = ts.requests;
  const tokenRes = await get(`${ts.realm}?service=${ts.service}&scope=repository:team/app:pull,push`, {
    authorization: basic('alice', USERS.alice),
  });
  assert.equal(tokenRes.status, 200);
  const body = (await tokenRes.json()) as Record<string, unknown>;
  assert.equal(ts.requests, before + 1);
  assert.equal(typeof body.token, 'string');
  assert.equal(body.access_token, body.token);
  assert.equal(body.expires_in, 120);
  assert.ok(!Number.isNaN(Date.parse(String(body.issued_at))));
  const token = String(body.token);
  const { header, claims } = decodeJwt(token);
  assert.equal(header.alg, 'ES256');
  assert.ok(Array.isArray(header.x5c) && header.x5c.length === 1);
  assert.equal(claims.sub, 'alice');
  assert.equal(claims.aud, ts.service);
  assert.deepEqual(claims.access, [{ type: 'repository', name: 'team/app', actions: ['pull', 'push'] }]);
  assert.equal((await get(`${reg.url}/v2/`, { authorization: `Bearer ${token}` })).status, 200);

  // The registry really verifies the signature: altered claims with the old signature are refused.
  const [h, , s] = token.split('.');
  const forgedClaims = Buffer.from(JSON.stringify({ ...claims, sub: 'mallory' })).toString('base64url');
  const forged = `${h}.${forgedClaims}.${s}`;
  assert.equal((await get(`${reg.url}/v2/`, { authorization: `Bearer ${forged}` })).status, 401);

  // Wrong credentials on the token request.
  const bad = await get(`${ts.realm}?service=${ts.service}`, { authorization: basic('alice', 'nope') });
  assert.equal(bad.status, 401);
  const wrongService = await get(`${ts.realm}?service=elsewhere`, {
    authorization: basic('alice', USERS.alice),
  });
  assert.equal(wrongService.status, 400);

  // OAuth2 password grant (POST form), several scopes in one space-separated field.
  const form = new URLSearchParams({
    grant_type: 'password',
    username: 'bob',
    password: USERS.bob,
    service: ts.service,
    client_id: 'strata-test',
    scope: 'repository:a:pull repository:b:pull,push',
  });
  const posted = await fetch(ts.realm, { method: 'POST', body: form, signal: AbortSignal.timeout(10_000) });
  assert.equal(posted.status, 200);
  const postedBody = (await posted.json()) as { access_token: string; scope: string };
  assert.equal(postedBody.scope, 'repository:a:pull repository:b:pull,push');
  assert.deepEqual(decodeJwt(postedBody.access_token).claims.access, [
    { type: 'repository', name: 'a', actions: ['pull'] },
    { type: 'repository', name: 'b', actions: ['pull', 'push'] },
  ]);
  const wrongGrant = await fetch(ts.realm, {
    method: 'POST',
    body: new URLSearchParams({ grant_type: 'refresh_token', refresh_token: 'x' }),
    signal: AbortSignal.timeout(10_000),
  });
  assert.equal(wrongGrant.status, 400);
  const badPassword = await fetch(ts.realm, {
    method: 'POST',
    body: new URLSearchParams({ grant_type: 'password', username: 'bob', password: 'x' }),
    signal: AbortSignal.timeout(10_000),
  });
  assert.equal(badPassword.status, 401);

  // Anonymous tokens grant nothing here: the registry refuses a pull made with one.
  const image = await pushBusybox(reg, 'team/app');
  const anon = (await (
    await get(`${ts.realm}?service=${ts.service}&scope=repository:team/app:pull`)
  ).json()) as {
    token: string;
  };
  assert.deepEqual(decodeJwt(anon.token).claims.access, []);
  const manifestUrl = `${reg.url}/v2/team/app/manifests/${image.digest}`;
  const accept = 'application/vnd.oci.image.manifest.v1+json';
  assert.equal((await get(manifestUrl, { authorization: `Bearer ${anon.token}`, accept })).status, 401);
  const pull = (await (
    await get(`${ts.realm}?service=${ts.service}&scope=repository:team/app:pull`, {
      authorization: basic('alice', USERS.alice),
    })
  ).json()) as { token: string };
  const ok = await get(manifestUrl, { authorization: `Bearer ${pull.token}`, accept });
  assert.equal(ok.status, 200);
  assert.equal(ok.headers.get('docker-content-digest'), image.digest);
  assert.ok(ts.log.some((r) => r.grantType === 'password' && r.user === 'bob' && r.status === 200));

  await reg.stop();
  await assertStopped(reg);
  assert.equal(await isListening(Number(new URL(ts.url).port)), false, 'token server stopped');
});

test('token registry with anonymous pull', async (t) => {
  const reg = await startRegistry({ auth: { mode: 'token', users: USERS, anonymousPull: true }, t });
  const ts = reg.tokenServer!;
  const image = await pushBusybox(reg, 'open/busybox');
  const anon = (await (
    await get(`${ts.realm}?service=${ts.service}&scope=repository:open/busybox:pull,push`)
  ).json()) as { token: string };
  // Only pull is granted, whatever was asked for.
  assert.deepEqual(decodeJwt(anon.token).claims.access, [
    { type: 'repository', name: 'open/busybox', actions: ['pull'] },
  ]);
  const inspected = (await skopeoInspect(image.ref, { raw: true })) as { layers: unknown[] };
  assert.equal(inspected.layers.length, 1);
});

test('images: multi-layer (oci and docker) and a two-platform index, read back with skopeo', async (t) => {
  const reg = await startRegistry({ auth: { mode: 'token', users: USERS }, t });
  const started = performance.now();
  const multi = await pushMultiLayer(reg, 'apps/multi', { tag: 'v1' });
  t.diagnostic(`pushMultiLayer (5 x 64 KiB) took ${Math.round(performance.now() - started)} ms`);
  assert.equal(multi.ref, `${reg.host}/apps/multi:v1`);
  assert.equal(multi.mediaType, 'application/vnd.oci.image.manifest.v1+json');
  assert.equal(multi.layers, 6);
  const raw = (await skopeoInspect(multi.ref, { raw: true, creds: reg.creds })) as {
    layers: Array<{ size: number; mediaType: string }>;
  };
  assert.ok(raw.layers.length >= 5);
  // Random payloads do not compress: every added layer is at least as big as its 64 KiB file.
  for (const layer of raw.layers.slice(1)) {
    assert.ok(layer.size >= 64 * 1024, `layer of ${layer.size} bytes`);
    assert.equal(layer.mediaType, 'application/vnd.oci.image.layer.v1.tar+gzip');
  }
  const config = (await skopeoInspect(multi.ref, { config: true, creds: reg.creds })) as {
    architecture: string;
    rootfs: { diff_ids: string[] };
    config: { Cmd: string[] };
  };
  assert.equal(config.architecture, 'amd64');
  assert.equal(config.rootfs.diff_ids.length, 6);
  assert.deepEqual(config.config.Cmd, ['/bin/sh']);

  const again = await pushMultiLayer(reg, 'apps/multi', { tag: 'v2' });
  assert.notEqual(again.digest, multi.digest, 'layers are random, so each image is new');

  const docker = await pushMultiLayer(reg, 'apps/docker', { format: 'docker', layers: 6, layerBytes: 1000 });
  assert.equal(docker.mediaType, 'application/vnd.docker.distribution.manifest.v2+json');
  assert.equal(docker.layers, 7);

  const index = await pushTwoPlatformIndex(reg, 'apps/multiarch');
  assert.equal(index.mediaType, 'application/vnd.oci.image.index.v1+json');
  assert.deepEqual(index.platforms, ['linux/amd64', 'linux/arm64']);
  const rawIndex = (await skopeoInspect(index.ref, { raw: true, creds: reg.creds })) as {
    manifests: Array<{ digest: string; platform: { os: string; architecture: string } }>;
  };
  assert.equal(rawIndex.manifests.length, 2);
  assert.deepEqual(
    rawIndex.manifests.map((m) => `${m.platform.os}/${m.platform.architecture}`),
    ['linux/amd64', 'linux/arm64'],
  );
  assert.deepEqual(
    rawIndex.manifests.map((m) => m.digest),
    index.manifests.map((m) => m.digest),
  );
  const arm = (await skopeoInspect(`${reg.host}/apps/multiarch@${rawIndex.manifests[1]!.digest}`, {
    config: true,
    creds: reg.creds,
  })) as { architecture: string };
  assert.equal(arm.architecture, 'arm64');

  // Copies between registries work with the wrapper too.
  const dst = await startRegistry({ t });
  const copied = await skopeoCopy(multi.ref, `${dst.host}/copy/multi:v1`, { srcCreds: reg.creds });
  assert.equal(copied, multi.digest);
});

test('images: bad options are refused before anything is built', async (t) => {
  const reg = await startRegistry({ t });
  await assert.rejects(pushMultiLayer(reg, 'x', { layers: 4 }), RangeError);
  await assert.rejects(pushMultiLayer(reg, 'x', { layers: 5.5 }), RangeError);
  await assert.rejects(pushMultiLayer(reg, 'x', { layerBytes: -1 }), RangeError);
  // A push with no credentials to a protected registry fails loudly.
  const locked = await startRegistry({ auth: { mode: 'basic', users: USERS }, t });
  await assert.rejects(
    skopeoCopy(`${reg.host}/nothing:here`, `${locked.host}/x:y`),
    /manifest unknown|not found|unauthorized|authentication/i,
  );
});

test('images run under real containerd', async (t) => {
  const reg = await startRegistry({ t });
  const dir = await tempDir('containerd');
  t.after(() => removeTempDir(dir));
  const sock = join(dir, 'containerd.sock');
  await writeFile(
    join(dir, 'config.toml'),
    [
      'version = 2',
      `root = "${dir}/root"`,
      `state = "${dir}/state"`,
      '[grpc]',
      `  address = "${sock}"`,
      '[plugins."io.containerd.grpc.v1.cri"]',
      '  disable_tcp_service = true',
      '',
    ].join('\n'),
  );
  await spawnServer('containerd', ['--config', join(dir, 'config.toml')], {
    readyCheck: async () => existsSync(sock),
    logFile: join(dir, 'containerd.log'),
    t,
  });
  const ctr = (args: string[]): Promise<string> => runCommand('ctr', ['--address', sock, ...args]);
  const images = [
    await pushBusybox(reg, 'run/busybox'),
    await pushMultiLayer(reg, 'run/multi', { format: 'docker' }),
    await pushTwoPlatformIndex(reg, 'run/index'),
  ];
  const expected = [
    'ok\n',
    'layer-1.bin\nlayer-2.bin\nlayer-3.bin\nlayer-4.bin\nlayer-5.bin\nok\n',
    'linux/amd64\nok\n',
  ];
  for (const [i, image] of images.entries()) {
    await ctr(['images', 'pull', '--plain-http', '--snapshotter', 'native', image.ref]);
    const out = await ctr([
      'run',
      '--rm',
      '--snapshotter',
      'native',
      image.ref,
      `harness-${i}`,
      '/bin/sh',
      '-c',
      // The pause: ctr 1.6 may drop what a container prints right before it exits (see TestContainerd.run).
      'ls /data 2>/dev/null; cat /etc/strata-platform 2>/dev/null; echo ok; sleep 0.2',
    ]);
    assert.equal(out, expected[i]);
  }
});

test('a registry registered with t.after is gone once its test ends', async (t) => {
  let reg: TestRegistry | undefined;
  await t.test('inner test owning the registry', async (inner) => {
    reg = await startRegistry({ auth: { mode: 'token', users: USERS }, t: inner });
    assert.equal(await isListening(portOf(reg)), true);
  });
  assert.ok(reg);
  await assertStopped(reg);
});

test('spawnServer: early exit, readiness timeout and stop take the whole process group', async (t) => {
  const dir = await tempDir('spawn');
  t.after(() => removeTempDir(dir));

  const early = spawnServer('sh', ['-c', 'echo boom >&2; exit 3'], {
    readyCheck: async () => false,
    name: 'early',
  });
  await assert.rejects(early, (err: unknown) => {
    assert.equal(errorKind(err), 'Unavailable');
    assert.match(String(err), /early exited \(code 3\).*boom/s);
    return true;
  });

  const pidFile = join(dir, 'late.pid');
  const late = spawnServer('sh', ['-c', `echo $$ > ${pidFile}; exec sleep 300`], {
    readyCheck: async () => false,
    timeoutMs: 300,
    name: 'late',
  });
  await assert.rejects(late, (err: unknown) => errorKind(err) === 'DeadlineExceeded');
  const latePid = Number(await readFile(pidFile, 'utf8'));
  await waitFor(() => !isAlive(latePid), 5000, { what: 'the unready server to die' });

  await assert.rejects(
    spawnServer('/nonexistent/binary', [], { readyCheck: async () => true }),
    (err: unknown) => errorKind(err) === 'Unavailable',
  );

  // A grandchild in the background dies with the group on stop().
  const childFile = join(dir, 'child.pid');
  const server = await spawnServer('sh', ['-c', `sleep 300 & echo $! > ${childFile}; wait`], {
    readyCheck: async () => existsSync(childFile) && (await readFile(childFile, 'utf8')).endsWith('\n'),
    logFile: join(dir, 'server.log'),
  });
  const grandchild = Number(await readFile(childFile, 'utf8'));
  assert.equal(isAlive(grandchild), true);
  await server.stop();
  await waitFor(() => !isAlive(grandchild), 5000, { what: 'the background child to die' });
  assert.equal(server.proc.pid !== undefined && isAlive(server.proc.pid), false);
});

test('servers still running when the test process exits are killed', async (t) => {
  const dir = await tempDir('exit');
  t.after(() => removeTempDir(dir));
  const script = join(dir, 'child.ts');
  const processHelper = new URL('../helpers/process.ts', import.meta.url).pathname;
  await writeFile(
    script,
    [
      `import { spawnServer } from ${JSON.stringify(processHelper)};`,
      "const s = await spawnServer('sleep', ['300'], { readyCheck: async () => true });",
      'console.log(s.proc.pid);',
      'process.exit(0);',
      '',
    ].join('\n'),
  );
  const pid = Number((await runCommand(process.execPath, [script])).trim());
  assert.ok(pid > 0);
  await waitFor(() => !isAlive(pid), 5000, { what: 'the orphaned server to die' });
});

test('waitFor returns the first truthy value and times out with the last error', async () => {
  let n = 0;
  assert.equal(
    await waitFor(() => (++n >= 3 ? `done after ${n}` : false), 5000, { intervalMs: 1 }),
    'done after 3',
  );
  await assert.rejects(
    waitFor(
      () => {
        throw new Error('still broken');
      },
      100,
      { what: 'a broken thing' },
    ),
    (err: unknown) =>
      errorKind(err) === 'DeadlineExceeded' && /a broken thing: still broken/.test(String(err)),
  );
});

test('Cleanup runs every action in reverse order and rethrows the first failure', async () => {
  const order: string[] = [];
  const c = new Cleanup();
  const dir = await tempDir('cleanup');
  c.addDir(dir);
  c.add(() => {
    order.push('a');
  });
  c.add(() => {
    order.push('b');
    throw new Error('b failed');
  });
  c.add(async () => {
    order.push('c');
  });
  await assert.rejects(c.run(), /b failed/);
  assert.deepEqual(order, ['c', 'b', 'a']);
  assert.equal(existsSync(dir), false);
  await assert.rejects(c.run(), /b failed/); // same outcome, actions not rerun
  assert.deepEqual(order, ['c', 'b', 'a']);
  assert.throws(() => c.add(() => {}), /after run/);
});

test('parseScope accepts type:name:actions and refuses malformed scopes', () => {
  assert.deepEqual(parseScope('repository:team/app:pull,push'), {
    type: 'repository',
    name: 'team/app',
    actions: ['pull', 'push'],
  });
  assert.deepEqual(parseScope('registry:catalog:*'), { type: 'registry', name: 'catalog', actions: ['*'] });
  assert.deepEqual(parseScope('repository:host:5000/app:pull'), {
    type: 'repository',
    name: 'host:5000/app',
    actions: ['pull'],
  });
  assert.deepEqual(parseScope('repository:app:'), undefined);
  assert.equal(parseScope(''), undefined);
  assert.equal(parseScope('repository'), undefined);
  assert.equal(parseScope(':app:pull'), undefined);
  assert.equal(parseScope('repository::pull'), undefined);
});
