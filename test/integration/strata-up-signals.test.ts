// `strata up` and the signals an operator sends: SIGHUP reloads the registry's watched files (with
// `watchFiles: false`, the only way they are reloaded), as it does for `strata facade`, and leaves the
// process serving; SIGTERM then stops it cleanly (exit 0, socket removed).
import assert from 'node:assert/strict';
import { once } from 'node:events';
import { access, appendFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import { runCommand, type ServerProcess, waitFor } from '../helpers/process.ts';
import { removeTempDir, tempDir } from '../helpers/tmp.ts';
import { startStrataUp, type UpAddresses } from '../helpers/up.ts';

const alice = { username: 'alice', password: 'wonderland' };
const bob = { username: 'bob', password: 'builder' };
const basic = (c: { username: string; password: string }) =>
  `Basic ${Buffer.from(`${c.username}:${c.password}`).toString('base64')}`;
const htpasswdLine = async (c: { username: string; password: string }) =>
  (await runCommand('htpasswd', ['-niB', c.username], { input: c.password, timeoutMs: 30_000 })).trim();

let work: string;
let server: ServerProcess | undefined;
let at: UpAddresses;

before(async () => {
  work = await tempDir('strata-up-signals');
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
  ({ server, at } = await startStrataUp({ work, root: join(work, 'root'), config, n: 1 }));
});

after(async () => {
  await server?.stop();
  if (work) await removeTempDir(work);
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
