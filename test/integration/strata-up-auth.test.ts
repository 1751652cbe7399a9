// `strata up` with client authentication (an htpasswd file in the registry section), as a user sets it
// up: skopeo pushes with credentials and is refused without them or with a wrong password (401 with a
// Basic challenge); the builder, signing in as a user of its own, builds a Dockerfile FROM an image in the
// hosted registry and pushes the result there; the facade composes a spec whose base and IDE images are
// in its hosted repositories without asking itself over HTTP; ctr pulls the composite with --user, and
// not without. The builder's password shows in no log and no auth file is left behind. Then the signals
// an operator sends: SIGHUP reloads the htpasswd file (with `watchFiles: false`, the only way it is
// reloaded), as it does for `strata facade`, and leaves the process serving; SIGTERM then stops it
// cleanly (exit 0, socket removed).
import assert from 'node:assert/strict';
import { once } from 'node:events';
import { access, appendFile, readdir, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import { runCtr } from '../helpers/daemon.ts';
import { createRepo } from '../helpers/git-repo.ts';
import { raw } from '../helpers/hosted.ts';
import { pushFilesImage, skopeoCopy } from '../helpers/images.ts';
import { runCommand, type ServerProcess, waitFor } from '../helpers/process.ts';
import { removeTempDir, tempDir } from '../helpers/tmp.ts';
import { metricSample, startStrataUp, strata, type UpAddresses } from '../helpers/up.ts';

const alice = { username: 'alice', password: 'wonderland' };
const bob = { username: 'bob', password: 'builder' };
const basic = (c: { username: string; password: string }) =>
  `Basic ${Buffer.from(`${c.username}:${c.password}`).toString('base64')}`;
const htpasswdLine = async (c: { username: string; password: string }) =>
  (await runCommand('htpasswd', ['-niB', c.username], { input: c.password, timeoutMs: 30_000 })).trim();

let work: string;
let root: string;
let server: ServerProcess | undefined;
let at: UpAddresses;

before(async () => {
  work = await tempDir('strata-up-auth');
  root = join(work, 'root');
  await writeFile(join(work, 'htpasswd'), `${await htpasswdLine(alice)}\n`, { mode: 0o600 });
  const config = join(work, 'up.yaml');
  await writeFile(
    config,
    [
      'daemon: { address: strata.sock, snapshotter: native }',
      'registry:',
      '  listen: "127.0.0.1:0"',
      '  shutdownGraceSeconds: 5',
      '  watchFiles: false',
      '  auth: { htpasswd: htpasswd }',
      'specs: { listen: "127.0.0.1:0" }',
      'builder: { listen: "127.0.0.1:0", storageDriver: vfs }',
      'metrics: "127.0.0.1:0"',
      '',
    ].join('\n'),
  );
  ({ server, at } = await startStrataUp({ work, root, config, n: 1 }));
});

after(async () => {
  await server?.stop();
  if (work) await removeTempDir(work);
});

const sample = async (name: string, labels: string[]) =>
  metricSample(await (await fetch(`${at.opsUrl}/metrics`)).text(), name, labels);

test('strata up with htpasswd auth: push, build, compose and pull with credentials only', async () => {
  const target = { host: at.registryHost, creds: alice };
  const base = await pushFilesImage(target, 'base/busybox', {
    busybox: true,
    layers: [{ 'etc/base-marker': 'base\n' }],
  });
  const ide = await pushFilesImage(target, 'ide/code', { layers: [{ 'ide/bin/ide-marker': 'ide\n' }] });

  // Anonymous: 401 with the Basic challenge; a push needs credentials, and the right password.
  const anon = await raw(at.registryUrl, 'POST', '/v2/other/app/blobs/uploads/');
  assert.equal(anon.status, 401);
  assert.match(anon.headers.get('www-authenticate') ?? '', /^Basic realm="/);
  assert.equal((await raw(at.registryUrl, 'GET', '/v2/base/busybox/tags/list')).status, 401);
  const wrong = { username: alice.username, password: 'not-it' };
  const headers = { authorization: basic(wrong) };
  assert.equal((await raw(at.registryUrl, 'POST', '/v2/other/app/blobs/uploads/', { headers })).status, 401);
  const copyTo = (creds?: typeof alice) =>
    skopeoCopy(base.ref, `${at.registryHost}/other/app:v1`, {
      srcCreds: alice,
      ...(creds && { destCreds: creds }),
    });
  await assert.rejects(copyTo(), /401|unauthorized|authentication required/i);
  await assert.rejects(copyTo(wrong), /401|unauthorized|invalid username or password/i);
  assert.equal(await copyTo(alice), base.digest);

  // The builder builds FROM the hosted image (a pull with credentials) and pushes its result there.
  const repo = await createRepo(join(work, 'app'));
  await repo.commit({
    Dockerfile: `FROM ${base.ref}\nRUN mkdir -p /tools && echo "made by RUN" > /tools/built.txt\n`,
  });
  const built = await strata(['build', repo.url, '--address', at.builder, '--branch', 'main']);
  const builtRef = built.trim().split('\n').at(-1) ?? '';
  assert.match(builtRef, new RegExp(`^${at.registryHost}/workspace-images:[0-9a-f]{64}$`));
  const tag = builtRef.slice(builtRef.lastIndexOf(':') + 1);
  const pushed = await raw(at.registryUrl, 'HEAD', `/v2/workspace-images/manifests/${tag}`, {
    headers: { authorization: basic(alice), accept: base.mediaType },
  });
  assert.equal(pushed.status, 200);

  // The facade composes a spec whose images are in its hosted repositories, reading them in-process:
  // no manifest request reaches the hosted repositories while it does.
  const manifestGets = () => sample('strata_facade_http_requests_total', ['route="hosted-manifest"']);
  const before = await manifestGets();
  const specs = join(root, 'specs');
  await strata(['spec', 'put', 'ws1', '--data-dir', specs, '--base-ref', builtRef, '--ide-ref', ide.ref]);
  const composite = `${at.registryHost}/remote/ws1:latest`;
  const anonPull = await runCtr(at.socket, ['images', 'pull', '--plain-http', composite], {
    timeoutMs: 180_000,
  });
  assert.notEqual(anonPull.code, 0, 'ctr pulled the composite without credentials');
  const pull = await runCtr(
    at.socket,
    ['images', 'pull', '--plain-http', '--user', `${alice.username}:${alice.password}`, composite],
    { timeoutMs: 180_000 },
  );
  assert.equal(pull.code, 0, pull.stderr);
  assert.equal(await manifestGets(), before);
  assert.equal(await sample('strata_facade_blob_reads_total', ['source="upstream"']), 0);
  const rootfs = join(work, 'rootfs');
  await strata(['rootfs', composite, rootfs, '--address', at.socket]);
  assert.equal(await readFile(join(rootfs, 'tools/built.txt'), 'utf8'), 'made by RUN\n');
  assert.equal(await readFile(join(rootfs, 'ide/bin/ide-marker'), 'utf8'), 'ide\n');
  assert.equal(await readFile(join(rootfs, 'etc/base-marker'), 'utf8'), 'base\n');

  // The builder's credentials stay in the process: not in its log, the build's log, or a file left over.
  // (`strata-up-builder:` is 18 bytes, so its base64 is a prefix of the whole pair's.)
  const userPrefix = Buffer.from('strata-up-builder:').toString('base64');
  const logs = await strata(['build', 'logs', builtRef, '--address', at.builder]);
  assert.match(logs, /made by RUN|built\.txt/);
  for (const text of [await readFile(join(work, 'up-1.log'), 'utf8'), logs])
    assert.ok(!text.includes(userPrefix));
  const files = await readdir(join(root, 'builder'), { recursive: true });
  assert.deepEqual(
    files.filter((f) => f.split('/').at(-1) === 'auth.json'),
    [],
  );
});

const v2 = async (c: { username: string; password: string }) =>
  (await fetch(`${at.registryUrl}/v2/`, { headers: { authorization: basic(c) } })).status;

test('SIGHUP reloads the htpasswd file and strata up keeps serving; SIGTERM then exits 0', async () => {
  const proc = server!.proc;
  assert.equal(await v2(alice), 200);
  assert.equal(await v2(bob), 401);
  await appendFile(join(work, 'htpasswd'), `${await htpasswdLine(bob)}\n`);
  // Not watched: bob is unknown until the signal.
  assert.equal(await v2(bob), 401);

  const exited = once(proc, 'exit') as Promise<[number | null, NodeJS.Signals | null]>;
  const died = exited.then(([code, signal]) => {
    throw new Error(`strata up exited on SIGHUP (${signal ?? code})`);
  });
  proc.kill('SIGHUP');
  await Promise.race([
    died,
    waitFor(async () => (await v2(bob)) === 200, 30_000, { what: 'bob to be let in after SIGHUP' }),
  ]);
  assert.equal(proc.exitCode, null, 'still running');
  assert.equal(await v2(alice), 200);

  proc.kill('SIGTERM');
  const [code, signal] = await exited;
  assert.deepEqual({ code, signal }, { code: 0, signal: null });
  await assert.rejects(access(at.socket), { code: 'ENOENT' }, 'the socket is removed');
});
