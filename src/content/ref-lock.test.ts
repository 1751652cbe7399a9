import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import { mkdtemp, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, test } from 'node:test';
import { errorKind } from '../errors.ts';
import { acquireRefLock, ownerAlive } from './ref-lock.ts';

const dirs: string[] = [];
after(async () => {
  for (const d of dirs) await rm(d, { recursive: true, force: true });
});

async function scratch(): Promise<{ lock: string; tmp: string }> {
  const dir = await mkdtemp(join(tmpdir(), 'strata-lock-'));
  dirs.push(dir);
  return { lock: join(dir, 'x.lock'), tmp: dir };
}

function deadPid(): number {
  return Number(spawnSync(process.execPath, ['-e', 'process.stdout.write(String(process.pid))']).stdout);
}

test('a lock is exclusive until released, and release is idempotent', async () => {
  const { lock, tmp } = await scratch();
  const l = await acquireRefLock(lock, 'r', tmp);
  await assert.rejects(acquireRefLock(lock, 'r', tmp), (err) => errorKind(err) === 'Unavailable');
  await l.release();
  await l.release();
  const l2 = await acquireRefLock(lock, 'r', tmp);
  // A late release of the old lock must not remove the new one.
  await l.release();
  await assert.rejects(acquireRefLock(lock, 'r', tmp), (err) => errorKind(err) === 'Unavailable');
  await l2.release();
  assert.deepEqual(await readdir(tmp), []);
});

test('locks of dead processes, reused pids and unreadable lock files are reclaimed', async () => {
  const { lock, tmp } = await scratch();
  const held = await acquireRefLock(lock, 'r', tmp);
  const self = JSON.parse(await readFile(lock, 'utf8'));
  await held.release();
  const stale = [
    { ...self, pid: deadPid() },
    { ...self, start: (self.start ?? 0) + 12345 }, // our pid, an earlier process
    { ...self, boot: 'another-boot', pid: 1 },
  ];
  for (const owner of stale) {
    assert.equal(ownerAlive(owner), false, JSON.stringify(owner));
    await writeFile(lock, JSON.stringify(owner));
    const l = await acquireRefLock(lock, 'r', tmp);
    await l.release();
  }
  await writeFile(lock, '{not json');
  await (await acquireRefLock(lock, 'r', tmp)).release();
  assert.deepEqual(await readdir(tmp), []);
});

test('a lock held by another live process is respected; a killed, unreaped one is not', async () => {
  const { lock, tmp } = await scratch();
  const child = spawn('sleep', ['60'], { stdio: 'ignore' });
  try {
    const owner = { pid: child.pid!, since: Date.now() - 1500, token: 'abc' };
    assert.equal(ownerAlive(owner), true);
    await writeFile(lock, JSON.stringify(owner));
    await assert.rejects(acquireRefLock(lock, 'layer-1', tmp), (err) => {
      assert.equal(errorKind(err), 'Unavailable');
      assert.match(
        (err as Error).message,
        /^ref layer-1 locked for 1\.\d{3}s \(since [0-9T:.Z-]+\): unavailable$/,
      );
      return true;
    });
  } finally {
    const exited = new Promise((resolve) => child.once('exit', resolve));
    child.kill('SIGKILL');
    await exited;
  }
  await (await acquireRefLock(lock, 'layer-1', tmp)).release();
});
