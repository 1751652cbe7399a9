// Which ingests (in-progress content writes) a namespace has, in the metadata database. The bytes live in
// the shared content store under a backend ref derived from (namespace, ref), so the same ref in two
// namespaces never collides. A record either expires (24 h after its last open, as containerd does for
// ingests without a lease) or is held by the lease it was opened under; the GC sweeps the rest.
import type { MetadataDb, Statement } from './db.ts';
import { LeaseStore } from './leases.ts';

/** An ingest opened without a lease may be collected this long after it was last opened. */
export const INGEST_EXPIRY_NS = 24n * 3600n * 1_000_000_000n;
/**
 * A reopen this soon after the expiry was last set leaves the record as it is: a registry upload opens
 * its ingest once per request, and each refresh would be a database commit (a sync) for a shift of the
 * 24 h expiry by seconds.
 */
export const INGEST_REFRESH_NS = 60n * 1_000_000_000n;

export interface IngestRecord {
  ref: string;
  /** The digest the writer was opened with, '' when none. */
  expected: string;
  /**
   * The writer stands for a blob already on disk and has written no byte of its own. containerd's
   * shared writer has no ingest in its blob store, so it has no status and is not listed.
   */
  shared: boolean;
}

type Row = { ref: string; expected: string; shared: bigint };
const toRecord = (r: Row): IngestRecord => ({ ref: r.ref, expected: r.expected, shared: r.shared !== 0n });

/**
 * The store ref holding a namespace's ingest. Namespaces cannot contain '/', so the mapping is
 * one-to-one and stable across restarts (an interrupted ingest resumes under the same key).
 */
export function backendRef(ns: string, ref: string): string {
  return `${ns}/${ref}`;
}

export class IngestRecords {
  private readonly db: MetadataDb;
  private readonly leases: LeaseStore;
  private readonly stmts: {
    get: Statement;
    fresh: Statement;
    list: Statement;
    upsertExpiring: Statement;
    upsertLeased: Statement;
    setShared: Statement;
    del: Statement;
  };

  constructor(db: MetadataDb) {
    this.db = db;
    this.leases = new LeaseStore(db);
    const q = (s: string): Statement => db.sql.prepare(s);
    this.stmts = {
      get: q('SELECT ref, expected, shared FROM ingests WHERE namespace = ? AND ref = ?'),
      fresh: q(
        'SELECT 1 FROM ingests WHERE namespace = ? AND ref = ? AND expected = ? AND total = ? AND expires_at >= ?',
      ),
      list: q('SELECT ref, expected, shared FROM ingests WHERE namespace = ? ORDER BY ref'),
      upsertExpiring: q(
        `INSERT INTO ingests (namespace, ref, expected, total, created_at, expires_at) VALUES (?, ?, ?, ?, ?, ?)
         ON CONFLICT (namespace, ref) DO UPDATE SET expected = excluded.expected, total = excluded.total,
           expires_at = excluded.expires_at`,
      ),
      // Under a lease the lease decides; an expiry set by an earlier unleased open stays (as in containerd).
      upsertLeased: q(
        `INSERT INTO ingests (namespace, ref, expected, total, created_at, expires_at) VALUES (?, ?, ?, ?, ?, NULL)
         ON CONFLICT (namespace, ref) DO UPDATE SET expected = excluded.expected, total = excluded.total`,
      ),
      setShared: q('UPDATE ingests SET shared = ? WHERE namespace = ? AND ref = ?'),
      del: q('DELETE FROM ingests WHERE namespace = ? AND ref = ?'),
    };
  }

  /**
   * Records that `ref` is being written in `ns` (creating the namespace if needed). With a lease the ingest
   * is added to it; an unknown lease is NotFound `lease does not exist`, as in containerd.
   */
  open(ns: string, ref: string, opts: { expected?: string; total?: number; lease?: string }): void {
    const expected = opts.expected ?? '';
    const total = opts.total ?? 0;
    if (!opts.lease) {
      // Unchanged and refreshed within INGEST_REFRESH_NS: nothing to write.
      const since = this.db.clock() + INGEST_EXPIRY_NS - INGEST_REFRESH_NS;
      if (this.stmts.fresh.get(ns, ref, expected, total, since) !== undefined) return;
    }
    this.db.write(() => {
      const now = this.db.clock();
      this.db.ensureNamespace(ns, now);
      if (opts.lease) {
        this.leases.attach(ns, opts.lease, { type: 'ingests', id: ref });
        this.stmts.upsertLeased.run(ns, ref, expected, total, now);
      } else {
        this.stmts.upsertExpiring.run(ns, ref, expected, total, now, now + INGEST_EXPIRY_NS);
      }
    });
  }

  /**
   * Sets whether the ingest is a shared writer without bytes of its own (see IngestRecord.shared); only
   * its writer, holding the ref, does. open() leaves the flag as it is (a new record has it unset).
   */
  setShared(ns: string, ref: string, shared: boolean): void {
    this.db.write(() => {
      this.stmts.setShared.run(shared ? 1 : 0, ns, ref);
    });
  }

  get(ns: string, ref: string): IngestRecord | undefined {
    const row = this.stmts.get.get(ns, ref) as Row | undefined;
    return row && toRecord(row);
  }

  list(ns: string): IngestRecord[] {
    return (this.stmts.list.all(ns) as Row[]).map(toRecord);
  }

  /**
   * Forgets the ingest (after commit or abort) and takes it out of the request's lease, if any. A lease
   * that does not exist is ignored here, as containerd does on removal. Returns whether a record existed.
   */
  remove(ns: string, ref: string, lease?: string): boolean {
    return this.db.write(() => {
      if (lease) this.leases.detach(ns, lease, { type: 'ingests', id: ref });
      return this.stmts.del.run(ns, ref).changes > 0;
    });
  }
}
