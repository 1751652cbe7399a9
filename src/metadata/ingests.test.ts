import assert from 'node:assert/strict';
import { afterEach, beforeEach, describe, it } from 'node:test';
import type { Nanos } from './db.ts';
import { INGEST_EXPIRY_NS, INGEST_REFRESH_NS, IngestRecords } from './ingests.ts';
import { LeaseStore } from './leases.ts';
import { openTestDb, type TestDb } from './test-db.ts';

const NS = 'ns';
const SECOND = 1_000_000_000n;
let now: Nanos;
let t: TestDb;
let ingests: IngestRecords;
beforeEach(() => {
  now = 1_000_000n * SECOND;
  t = openTestDb({ clock: () => now });
  ingests = new IngestRecords(t.db);
});
afterEach(() => t.cleanup());

function row(ref: string): { expires_at: bigint | null; total: bigint; expected: string; shared: bigint } {
  return t.db.sql
    .prepare('SELECT expires_at, total, expected, shared FROM ingests WHERE namespace = ? AND ref = ?')
    .get(NS, ref) as { expires_at: bigint | null; total: bigint; expected: string; shared: bigint };
}

describe('IngestRecords.open', () => {
  it('refreshes the expiry of an unchanged ingest at most once per refresh interval', () => {
    const start = now;
    ingests.open(NS, 'up', {});
    assert.equal(row('up').expires_at, start + INGEST_EXPIRY_NS);
    now += INGEST_REFRESH_NS / 2n;
    ingests.open(NS, 'up', {});
    assert.equal(
      row('up').expires_at,
      start + INGEST_EXPIRY_NS,
      'a reopen within the interval writes nothing',
    );
    now = start + INGEST_REFRESH_NS + SECOND;
    ingests.open(NS, 'up', {});
    assert.equal(row('up').expires_at, now + INGEST_EXPIRY_NS, 'a later reopen refreshes');
  });

  it('writes at once when the total or the expected digest changes, or the ingest was removed', () => {
    ingests.open(NS, 'up', {});
    now += SECOND;
    ingests.open(NS, 'up', { total: 5 });
    assert.equal(row('up').total, 5n);
    assert.equal(row('up').expires_at, now + INGEST_EXPIRY_NS);
    now += SECOND;
    ingests.open(NS, 'up', { total: 5, expected: 'sha256:x' });
    assert.equal(row('up').expected, 'sha256:x');
    assert.ok(ingests.remove(NS, 'up'));
    ingests.open(NS, 'up', { total: 5, expected: 'sha256:x' });
    assert.equal(row('up').expires_at, now + INGEST_EXPIRY_NS);
  });

  it('under a lease attaches the ingest every time, and keeps an earlier expiry', () => {
    const leases = new LeaseStore(t.db);
    leases.create(NS, { id: 'l1' });
    ingests.open(NS, 'up', {});
    ingests.open(NS, 'up', { lease: 'l1' });
    assert.equal(row('up').expires_at, now + INGEST_EXPIRY_NS);
    const attached = t.db.sql
      .prepare(
        "SELECT count(*) AS n FROM lease_resources WHERE namespace = ? AND lease = ? AND type = 'ingests'",
      )
      .get(NS, 'l1') as { n: bigint };
    assert.equal(attached.n, 1n);
  });
});

describe('schema version 4', () => {
  it('keeps the hold of every ingest recorded before with an expected digest', () => {
    ingests.open(NS, 'expects', { expected: 'sha256:x' });
    ingests.open(NS, 'plain', {});
    t.stepBackTo(3); // as a database written before the column is
    t.reopen();
    assert.equal(row('expects').shared, 1n);
    assert.equal(row('plain').shared, 0n);
  });
});
