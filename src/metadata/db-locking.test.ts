// The database is held by one connection at a time unless opened `shared`, as containerd's bolt file is
// held by its flock: a second opener fails (after its busy timeout) instead of seeing half a daemon's state.
import assert from 'node:assert/strict';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, it } from 'node:test';
import { MetadataDb } from './db.ts';

let dir: string;
let path: string;
const open: MetadataDb[] = [];
beforeEach(() => {
  dir = mkdtempSync(join(tmpdir(), 'strata-meta-lock-'));
  path = join(dir, 'meta.db');
});
afterEach(() => {
  for (const db of open.splice(0)) db.close();
  rmSync(dir, { recursive: true, force: true });
});

const opened = (options: ConstructorParameters<typeof MetadataDb>[1] = {}): MetadataDb => {
  const db = new MetadataDb(path, options);
  open.push(db);
  return db;
};

describe('MetadataDb locking', () => {
  it('holds the file: a second connection cannot open it while the first is open', () => {
    const first = opened();
    first.write(() => first.ensureNamespace('ns1'));
    assert.equal(first.sql.pragma('locking_mode', { simple: true }), 'exclusive');
    assert.throws(() => opened({ busyTimeoutMs: 50 }), /locked|busy/i);
    first.close();
    const again = opened();
    assert.deepEqual(again.sql.prepare('SELECT name FROM namespaces').all(), [{ name: 'ns1' }]);
  });

  it('keeps its WAL index in memory (no -shm file) and its data across reopen', () => {
    const first = opened();
    first.write(() => first.ensureNamespace('ns1'));
    first.write(() => first.ensureNamespace('ns2'));
    assert.equal(first.sql.pragma('journal_mode', { simple: true }), 'wal');
    assert.ok(existsSync(`${path}-wal`));
    assert.equal(existsSync(`${path}-shm`), false);
    first.close();
    const again = opened();
    assert.equal((again.sql.prepare('SELECT count(*) AS n FROM namespaces').get() as { n: bigint }).n, 2n);
  });

  it('shares the file between connections opened shared', () => {
    const a = opened({ shared: true });
    const b = opened({ shared: true });
    assert.equal(a.sql.pragma('locking_mode', { simple: true }), 'normal');
    a.write(() => a.ensureNamespace('from-a'));
    b.write(() => b.ensureNamespace('from-b'));
    assert.deepEqual(a.sql.prepare('SELECT name FROM namespaces ORDER BY name').all(), [
      { name: 'from-a' },
      { name: 'from-b' },
    ]);
  });
});
