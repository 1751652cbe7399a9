import assert from 'node:assert/strict';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import Database from 'better-sqlite3';
import { lockRoot, parseHolder } from './root-lock.ts';

describe('lockRoot', () => {
  it('names what holds the root: a facade, strata up or a daemon, with its pid', async (t) => {
    const root = await mkdtemp(join(tmpdir(), 'root-lock-'));
    t.after(() => rm(root, { recursive: true, force: true }));
    for (const [role, words] of [
      ['facade', 'a facade serving hosted repositories'],
      ['up', 'strata up'],
      ['daemon', 'another daemon'],
    ] as const) {
      const release = await lockRoot(root, role);
      assert.equal(await readFile(join(root, 'daemon.pid'), 'utf8'), `${process.pid} ${role}\n`);
      await assert.rejects(lockRoot(root, 'daemon'), (err: Error) => {
        assert.equal(err.message, `state directory ${root} is in use by ${words} (pid ${process.pid})`);
        return true;
      });
      await release();
    }
  });

  it('takes a root an older version locked (no role column, a bare pid)', async (t) => {
    const root = await mkdtemp(join(tmpdir(), 'root-lock-'));
    t.after(() => rm(root, { recursive: true, force: true }));
    const old = new Database(join(root, 'daemon.lock'));
    old.exec('CREATE TABLE holder (pid INTEGER NOT NULL); INSERT INTO holder VALUES (42)');
    old.close();
    await writeFile(join(root, 'daemon.pid'), '42\n');
    const release = await lockRoot(root, 'up');
    await assert.rejects(lockRoot(root), /in use by strata up/);
    await release();
  });

  it('reads pid files of both forms', () => {
    assert.deepEqual(parseHolder('123 facade\n'), { pid: 123, role: 'facade' });
    assert.deepEqual(parseHolder('123\n'), { pid: 123, role: 'daemon' });
    assert.deepEqual(parseHolder('123 something-else'), { pid: 123, role: 'daemon' });
    assert.deepEqual(parseHolder(''), {});
  });
});
