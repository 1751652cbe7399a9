// Snapshot metadata in the metadata database, with the semantics containerd's metadata snapshotter and its
// native backend give together: per namespace and snapshotter, keys of active and view snapshots and names
// of committed ones share one key space; a parent must be committed; a snapshot with children cannot be
// removed; labels follow containerd's rules. Directories are the snapshotter's business, not this store's.
// Messages are containerd's (errdefs suffix included), because ctr prints them.
import { alreadyExists, failedPrecondition, invalidArgument, notFound, unknownError } from '../errors.ts';
import { decodeMap, encodeMap, type MetadataDb, type Nanos, type Statement } from './db.ts';
import type { Adaptor } from './filters/filter.ts';
import { parseFilters, selectMatching } from './filters/filter.ts';
import { getEntry, goQuote, setEntry, validateLabels, withoutEmpty } from './labels.ts';
import { LeaseStore } from './leases.ts';

export type SnapshotKind = 'view' | 'active' | 'committed';

export interface SnapshotUsage {
  /** Bytes allocated on disk (512-byte blocks, each inode once). */
  size: number;
  inodes: number;
}

export interface SnapshotRecord {
  /** The key (active, view) or name (committed). */
  name: string;
  /** Name of the committed parent, or ''. */
  parent: string;
  kind: SnapshotKind;
  labels: Record<string, string>;
  createdAtNs: Nanos;
  updatedAtNs: Nanos;
  /** The snapshotter's id for the backing directory. */
  backingId: string;
  /** Recorded at commit; zero for active and view snapshots. */
  usage: SnapshotUsage;
  /** Its number in the namespace and snapshotter's sequence (see backendKey). */
  seq: number;
}

/**
 * The key containerd's backend snapshotters know a snapshot by, `<namespace>/<seq>/<key>`: some of their
 * messages name it, and ctr prints those.
 */
export function backendKey(ns: string, rec: SnapshotRecord): string {
  return `${ns}/${rec.seq}/${rec.name}`;
}

/** Label a client sets on Prepare to name the committed snapshot it is about to make. */
export const LABEL_SNAPSHOT_REF = 'containerd.io/snapshot.ref';

export interface CreateSnapshot {
  key: string;
  parent: string;
  kind: 'active' | 'view';
  labels: Record<string, string>;
  backingId: string;
  /** The request's lease: it holds the new snapshot. */
  lease?: string;
}

export interface CommitSnapshot {
  name: string;
  key: string;
  labels: Record<string, string>;
  usage: SnapshotUsage;
  lease?: string;
}

interface Row {
  key: string;
  kind: string;
  parent: string;
  labels: string;
  created_at: bigint;
  updated_at: bigint;
  backing_id: string;
  usage_size: bigint;
  usage_inodes: bigint;
  seq: bigint;
}

const COLUMNS =
  'key, kind, parent, labels, created_at, updated_at, backing_id, usage_size, usage_inodes, seq';

function toRecord(r: Row): SnapshotRecord {
  return {
    name: r.key,
    parent: r.parent,
    kind: r.kind === 'active' || r.kind === 'view' ? r.kind : 'committed',
    labels: decodeMap(r.labels),
    createdAtNs: r.created_at,
    updatedAtNs: r.updated_at,
    backingId: r.backing_id,
    usage: { size: Number(r.usage_size), inodes: Number(r.usage_inodes) },
    seq: Number(r.seq),
  };
}

/** containerd's snapshot field paths for filters: kind, name, parent, labels.* */
export function snapshotAdaptor(s: SnapshotRecord): Adaptor {
  return {
    field(path) {
      switch (path[0]) {
        case 'kind':
          return s.kind;
        case 'name':
          return s.name;
        case 'parent':
          return s.parent;
        case 'labels': {
          const rest = path.slice(1);
          if (rest.length === 0 || Object.keys(s.labels).length === 0) return undefined;
          const key = rest.join('.');
          return Object.hasOwn(s.labels, key) ? s.labels[key] : undefined;
        }
        default:
          return undefined;
      }
    },
  };
}

const doesNotExist = (key: string) => notFound(`snapshot ${key} does not exist: not found`);

/** One snapshotter's snapshots, all namespaces. */
/** containerd keeps snapshot keys as bolt keys, which cannot be longer; a bound on every row's size too. */
export const MAX_SNAPSHOT_KEY_BYTES = 32 << 10;

function checkKeySize(what: 'key' | 'name', key: string): void {
  const n = Buffer.byteLength(key);
  if (n > MAX_SNAPSHOT_KEY_BYTES) {
    throw invalidArgument(
      `snapshot ${what} too large: ${n} bytes, at most ${MAX_SNAPSHOT_KEY_BYTES}: invalid argument`,
    );
  }
}

/**
 * What create()'s transaction decided: the new record, the parent that is not committed, or the lease's
 * refusal (each refusal after the snapshot was numbered, so the transaction commits).
 */
interface Created {
  record?: SnapshotRecord;
  parent?: SnapshotRecord;
  notCommitted?: SnapshotRecord;
  leaseRefused?: unknown;
}

export class SnapshotStore {
  readonly snapshotter: string;
  private readonly db: MetadataDb;
  private readonly leaseType: string;
  private readonly leases: LeaseStore;
  private readonly stmts: {
    get: Statement;
    insert: Statement;
    commit: Statement;
    del: Statement;
    delIfBacking: Statement;
    setLabels: Statement;
    list: Statement;
    hasChild: Statement;
    byBacking: Statement;
    allBacking: Statement;
    all: Statement;
    nextSeq: Statement;
  };

  constructor(db: MetadataDb, snapshotter: string) {
    this.db = db;
    this.snapshotter = snapshotter;
    this.leaseType = `snapshots/${snapshotter}`;
    this.leases = new LeaseStore(db);
    const q = (s: string): Statement => db.sql.prepare(s);
    const where = 'namespace = ? AND snapshotter = ?';
    this.stmts = {
      get: q(`SELECT ${COLUMNS} FROM snapshots WHERE ${where} AND key = ?`),
      insert: q(
        `INSERT INTO snapshots (namespace, snapshotter, key, kind, parent, labels, created_at, updated_at, backing_id, seq)
         VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
      ),
      commit: q(
        `UPDATE snapshots SET key = ?, kind = 'committed', labels = ?, created_at = ?, updated_at = ?,
         usage_size = ?, usage_inodes = ?, seq = ? WHERE ${where} AND key = ?`,
      ),
      del: q(`DELETE FROM snapshots WHERE ${where} AND key = ?`),
      delIfBacking: q(`DELETE FROM snapshots WHERE ${where} AND key = ? AND backing_id = ?`),
      setLabels: q(`UPDATE snapshots SET labels = ?, updated_at = ? WHERE ${where} AND key = ?`),
      list: q(`SELECT ${COLUMNS} FROM snapshots WHERE ${where} ORDER BY key`),
      hasChild: q(`SELECT 1 FROM snapshots WHERE ${where} AND parent = ? LIMIT 1`),
      byBacking: q(`SELECT ${COLUMNS} FROM snapshots WHERE ${where} AND backing_id = ?`),
      allBacking: q('SELECT DISTINCT backing_id FROM snapshots WHERE snapshotter = ?'),
      all: q(`SELECT namespace, ${COLUMNS} FROM snapshots WHERE snapshotter = ?`),
      nextSeq: q(
        `INSERT INTO snapshot_sequences (namespace, snapshotter, last) VALUES (?, ?, 1)
         ON CONFLICT DO UPDATE SET last = last + 1 RETURNING last`,
      ),
    };
  }

  get(ns: string, key: string): SnapshotRecord | undefined {
    const row = this.stmts.get.get(ns, this.snapshotter, key) as Row | undefined;
    return row ? toRecord(row) : undefined;
  }

  /** NotFound `snapshot <key> does not exist: not found`. */
  stat(ns: string, key: string): SnapshotRecord {
    const rec = this.get(ns, key);
    if (!rec) throw doesNotExist(key);
    return rec;
  }

  /**
   * Records a new active or view snapshot; returns it with its parent's record. AlreadyExists when the key
   * or the `containerd.io/snapshot.ref` target is taken (an existing target joins the request's lease),
   * NotFound for a missing parent, InvalidArgument for a parent that is not committed or labels over the
   * limits, Unknown for an empty key (after all those checks).
   */
  create(ns: string, c: CreateSnapshot): { record: SnapshotRecord; parent?: SnapshotRecord } {
    checkKeySize('key', c.key);
    validateLabels('info.Labels', c.labels);
    const target = c.labels[LABEL_SNAPSHOT_REF];
    const created = this.db.write((): Created | 'no key' | undefined => {
      if (target && this.get(ns, target)) {
        // As containerd: the request's lease now holds the target (the caller relies on it instead of
        // the snapshot it did not make), so this transaction commits and the error is thrown after it.
        if (c.lease) this.leaseAdd(ns, c.lease, target);
        return undefined;
      }
      if (this.get(ns, c.key)) throw alreadyExists(`snapshot ${goQuote(c.key)}: already exists`);
      let parent: SnapshotRecord | undefined;
      if (c.parent !== '') {
        parent = this.get(ns, c.parent);
        if (!parent) throw notFound(`parent snapshot ${c.parent} does not exist: not found`);
        if (parent.kind !== 'committed') {
          // containerd 1.6 numbers the snapshot before its backend refuses the parent, and keeps the
          // number spent: this transaction commits so the next one is numbered as there.
          this.nextSeq(ns);
          return { notCommitted: parent };
        }
      }
      const now = this.db.clock();
      this.db.ensureNamespace(ns, now);
      // containerd 1.6 numbers the snapshot before its database takes the key and the lease, and keeps the
      // number when either refuses (an empty key, a lease that does not exist).
      const seq = this.nextSeq(ns);
      if (c.key === '') return 'no key';
      if (c.lease) {
        try {
          this.leaseAdd(ns, c.lease, c.key);
        } catch (err) {
          return { leaseRefused: err };
        }
      }
      this.stmts.insert.run(
        ns,
        this.snapshotter,
        c.key,
        c.kind,
        c.parent,
        encodeMap(withoutEmpty(c.labels)),
        now,
        now,
        c.backingId,
        seq,
      );
      return { record: this.stat(ns, c.key), ...(parent ? { parent } : {}) };
    });
    if (!created) throw alreadyExists(`target snapshot ${goQuote(target!)}: already exists`);
    if (created === 'no key') this.refuseEmptyKey(ns, c.lease);
    if (created.leaseRefused !== undefined) throw created.leaseRefused;
    if (created.notCommitted) {
      throw invalidArgument(
        `failed to create snapshot: parent ${goQuote(backendKey(ns, created.notCommitted))} is not committed snapshot: invalid argument`,
      );
    }
    return { record: created.record!, ...(created.parent ? { parent: created.parent } : {}) };
  }

  /**
   * containerd takes an empty key only as far as its database, whose refusal is an Unknown error: the
   * namespace it made first stays (committed above), the lease's own check comes before.
   */
  private refuseEmptyKey(ns: string, lease: string | undefined): never {
    if (lease) {
      // Rolled back by the error, as containerd's transaction is.
      this.db.write(() => {
        this.leaseAdd(ns, lease, '');
        throw unknownError('key required');
      });
    }
    throw unknownError('bucket name required');
  }

  /** Drops a record create() made, unless something replaced it meanwhile (a failed prepare's undo). */
  forget(ns: string, key: string, backingId: string, lease?: string): void {
    this.db.write(() => {
      const r = this.stmts.delIfBacking.run(ns, this.snapshotter, key, backingId);
      // Its sequence number stays spent, as containerd 1.6's does when its backend fails a prepare.
      if (r.changes > 0 && lease) this.leases.detach(ns, lease, { type: this.leaseType, id: key });
    });
  }

  /** The next number of the namespace's sequence for this snapshotter. Call inside a write transaction. */
  private nextSeq(ns: string): number {
    return Number((this.stmts.nextSeq.get(ns, this.snapshotter) as { last: bigint }).last);
  }

  /**
   * Turns active snapshot `key` into committed snapshot `name` (same backing directory). Labels are the
   * commit's, times restart, as in containerd. AlreadyExists if `name` is taken, NotFound if `key` is
   * missing, FailedPrecondition if it is not active, Unknown for an empty name.
   */
  commit(ns: string, c: CommitSnapshot): SnapshotRecord {
    checkKeySize('name', c.name);
    validateLabels('info.Labels', c.labels);
    // containerd's database refuses an empty name before it looks at the key (an Unknown error).
    if (c.name === '') throw unknownError('bucket name required');
    return this.db.write(() => {
      if (this.get(ns, c.name)) throw alreadyExists(`snapshot ${goQuote(c.name)}: already exists`);
      const active = this.get(ns, c.key);
      if (!active) throw doesNotExist(c.key);
      if (active.kind !== 'active') {
        throw failedPrecondition(
          `failed to commit snapshot: snapshot ${goQuote(backendKey(ns, active))} is not active: failed precondition`,
        );
      }
      if (c.lease) this.leaseAdd(ns, c.lease, c.name);
      const now = this.db.clock();
      this.stmts.commit.run(
        c.name,
        encodeMap(withoutEmpty(c.labels)),
        now,
        now,
        c.usage.size,
        c.usage.inodes,
        this.nextSeq(ns),
        ns,
        this.snapshotter,
        c.key,
      );
      if (c.lease) this.leases.detach(ns, c.lease, { type: this.leaseType, id: c.key });
      return this.stat(ns, c.name);
    });
  }

  /** Deletes the record and returns it. NotFound; FailedPrecondition while it has children. */
  remove(ns: string, key: string, lease?: string): SnapshotRecord {
    return this.db.write(() => {
      const rec = this.stat(ns, key);
      if (this.stmts.hasChild.get(ns, this.snapshotter, key)) {
        throw failedPrecondition('cannot remove snapshot with child: failed precondition');
      }
      this.stmts.del.run(ns, this.snapshotter, key);
      if (lease) this.leases.detach(ns, lease, { type: this.leaseType, id: key });
      this.db.markDirty();
      return rec;
    });
  }

  /**
   * Labels only, with containerd's field paths: `labels` replaces all, `labels.<k>` sets one key (an
   * absent or empty value deletes it), no paths replaces all; anything else is InvalidArgument.
   */
  update(
    ns: string,
    info: { name: string; labels: Record<string, string> },
    paths: readonly string[],
  ): SnapshotRecord {
    if (info.name === '') throw invalidArgument('invalid argument');
    return this.db.write(() => {
      const rec = this.stat(ns, info.name);
      let labels = rec.labels;
      if (paths.length === 0) {
        labels = { ...info.labels };
      } else {
        for (const path of paths) {
          if (path.startsWith('labels.')) {
            const key = path.slice('labels.'.length);
            setEntry(labels, key, getEntry(info.labels, key));
          } else if (path === 'labels') {
            labels = { ...info.labels };
          } else {
            throw invalidArgument(
              `cannot update ${goQuote(path)} field on snapshot ${goQuote(info.name)}: invalid argument`,
            );
          }
        }
      }
      validateLabels('info.Labels', labels);
      this.stmts.setLabels.run(
        encodeMap(withoutEmpty(labels)),
        this.db.clock(),
        ns,
        this.snapshotter,
        info.name,
      );
      return this.stat(ns, info.name);
    });
  }

  /** The namespace's snapshots matching any filter (kind, name, parent, labels.*), in key byte order. */
  list(ns: string, filters: readonly string[]): Promise<SnapshotRecord[]> {
    const filter = parseFilters(filters);
    const rows = this.stmts.list.all(ns, this.snapshotter) as Row[];
    return selectMatching(filter, rows.map(toRecord), snapshotAdaptor, this.db.regex);
  }

  /** The namespace's snapshot whose own directory has this backing id. */
  byBackingId(ns: string, backingId: string): SnapshotRecord | undefined {
    const rows = (this.stmts.byBacking.all(ns, this.snapshotter, backingId) as Row[]).map(toRecord);
    return rows.find((r) => r.kind !== 'view' || r.parent === '');
  }

  /** Every backing id in use, all namespaces. */
  backingIds(): Set<string> {
    const rows = this.stmts.allBacking.all(this.snapshotter) as Array<{ backing_id: string }>;
    return new Set(rows.map((r) => r.backing_id));
  }

  /** Every snapshot of this snapshotter, all namespaces. */
  all(): Array<{ ns: string; record: SnapshotRecord }> {
    const rows = this.stmts.all.all(this.snapshotter) as Array<Row & { namespace: string }>;
    return rows.map((r) => ({ ns: r.namespace, record: toRecord(r) }));
  }

  private leaseAdd(ns: string, lease: string, key: string): void {
    this.leases.attach(ns, lease, { type: this.leaseType, id: key });
  }
}
