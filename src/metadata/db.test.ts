import assert from 'node:assert/strict';
import { afterEach, beforeEach, describe, it } from 'node:test';
import Database from 'better-sqlite3';
import { errorKind } from '../errors.ts';
import { MetadataDb, monotonicClock, SCHEMA_VERSION } from './db.ts';
import { openTestDb, type TestDb } from './test-db.ts';

let t: TestDb;
beforeEach(() => {
  t = openTestDb();
});
afterEach(() => t.cleanup());

describe('MetadataDb', () => {
  it('opens with WAL, foreign keys and the current schema', () => {
    assert.equal(t.db.sql.pragma('journal_mode', { simple: true }), 'wal');
    assert.equal(Number(t.db.sql.pragma('foreign_keys', { simple: true })), 1);
    assert.equal(Number(t.db.sql.pragma('synchronous', { simple: true })), 2); // FULL: durable commits
    assert.equal(t.db.schemaVersion, SCHEMA_VERSION);
    const tables = (
      t.db.sql.prepare("SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name").all() as Array<{
        name: string;
      }>
    ).map((r) => r.name);
    for (const name of [
      'content',
      'images',
      'ingests',
      'lease_resources',
      'leases',
      'namespaces',
      'snapshots',
    ]) {
      assert.ok(tables.includes(name), name);
    }
  });

  it('reopens without re-running migrations and keeps data', () => {
    t.db.write(() => t.db.ensureNamespace('ns1'));
    const db = t.reopen();
    assert.equal(db.schemaVersion, SCHEMA_VERSION);
    const rows = db.sql.prepare('SELECT name FROM namespaces').all() as Array<{ name: string }>;
    assert.deepEqual(
      rows.map((r) => r.name),
      ['ns1'],
    );
  });

  it('refuses a database from a newer version of the program', () => {
    t.db.close();
    const raw = new Database(t.path);
    raw.prepare('UPDATE schema_version SET version = ?').run(SCHEMA_VERSION + 1);
    raw.close();
    assert.throws(
      () => new MetadataDb(t.path),
      (err: unknown) => errorKind(err) === 'Internal',
    );
    t.db = new MetadataDb(':memory:'); // so cleanup has something to close
  });

  it('rolls a failed write back completely', () => {
    assert.throws(() =>
      t.db.write(() => {
        t.db.ensureNamespace('half');
        throw new Error('boom');
      }),
    );
    assert.equal(t.db.sql.prepare("SELECT 1 FROM namespaces WHERE name = 'half'").get(), undefined);
  });

  it('turns nested writes into savepoints', () => {
    t.db.write(() => {
      t.db.ensureNamespace('outer');
      assert.throws(() =>
        t.db.write(() => {
          t.db.ensureNamespace('inner');
          throw new Error('inner fails');
        }),
      );
    });
    const rows = t.db.sql.prepare('SELECT name FROM namespaces ORDER BY name').all() as Array<{
      name: string;
    }>;
    assert.deepEqual(
      rows.map((r) => r.name),
      ['outer'],
    );
  });

  it('calls dirty listeners until unsubscribed', () => {
    let calls = 0;
    const off = t.db.onDirty(() => calls++);
    t.db.markDirty();
    off();
    t.db.markDirty();
    assert.equal(calls, 1);
    assert.equal(t.db.dirty, 2);
  });
});

describe('monotonicClock', () => {
  it('never repeats or goes back, and follows wall time', () => {
    const clock = monotonicClock();
    let last = clock();
    for (let i = 0; i < 10000; i++) {
      const now = clock();
      assert.ok(now > last);
      last = now;
    }
    const wallNs = BigInt(Date.now()) * 1_000_000n;
    const drift = last > wallNs ? last - wallNs : wallNs - last;
    assert.ok(drift < 60_000_000_000n, `clock is within a minute of wall time (drift ${drift} ns)`);
  });
});
