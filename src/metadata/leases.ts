// Leases: named, labelled holds on resources (content, ingests, images, snapshots) that keep them from
// garbage collection until the lease is deleted or its `containerd.io/gc.expire` time passes.
import { alreadyExists, invalidArgument, notFound, unimplemented } from '../errors.ts';
import { decodeMap, encodeMap, type MetadataDb, type Nanos, nanosToDate, type Statement } from './db.ts';
import { leaseAdaptor } from './filters/adaptors.ts';
import { parseStoreFilters, selectMatching } from './filters/filter.ts';
import { goDigestError } from './go-digest.ts';
import { goQuote, withoutEmpty } from './labels.ts';

export interface LeaseRecord {
  id: string;
  labels: Record<string, string>;
  createdAt: Date;
  createdAtNs: Nanos;
}

export interface LeaseResource {
  id: string;
  /** `content`, `ingests`, `images` or `snapshots/<snapshotter>`. */
  type: string;
}

interface LeaseRow {
  id: string;
  labels: string;
  created_at: bigint;
}

const toRecord = (r: LeaseRow): LeaseRecord => ({
  id: r.id,
  labels: decodeMap(r.labels),
  createdAt: nanosToDate(r.created_at),
  createdAtNs: r.created_at,
});

/** Checks a resource as containerd does; returns it with the id normalised. */
export function checkLeaseResource(r: LeaseResource): LeaseResource {
  const parts = r.type.split('/');
  switch (parts[0]) {
    case 'content':
    case 'ingests':
    case 'images':
      if (parts.length !== 1) throw invalidArgument(`invalid resource type ${r.type}: invalid argument`);
      if (parts[0] === 'content') {
        const err = goDigestError(r.id);
        if (err) throw invalidArgument(`invalid content resource id ${r.id}: ${err}: invalid argument`);
      }
      return r;
    case 'snapshots':
      if (parts.length !== 2)
        throw invalidArgument(`invalid snapshot resource type ${r.type}: invalid argument`);
      return r;
    default:
      throw unimplemented(`resource type ${r.type} not supported yet: not implemented`);
  }
}

/**
 * Parses containerd's expiry label value as Go 1.19's time.Parse(time.RFC3339, …) does (containerd 1.6's
 * build) into nanoseconds; undefined when Go would refuse it (containerd then ignores the label). Go's
 * parser is looser than RFC 3339: a one-digit hour, a fraction after `.` or `,` of any length (cut to
 * nanoseconds) and an offset whose hours or minutes are out of range all parse.
 */
export function parseRfc3339(value: string): Nanos | undefined {
  const m = /^(\d{4})-(\d{2})-(\d{2})T(\d{1,2}):(\d{2}):(\d{2})(?:[.,](\d+))?(Z|[+-]\d{2}:\d{2})$/.exec(
    value,
  );
  if (!m) return undefined;
  const [, y, mo, d, h, mi, s, frac, zone] = m;
  // setUTCFullYear, not Date.UTC: the latter reads years 0-99 as 1900-1999.
  const date = new Date(0);
  date.setUTCFullYear(Number(y), Number(mo) - 1, Number(d));
  date.setUTCHours(Number(h), Number(mi), Number(s));
  const ms = date.getTime();
  if (
    Number.isNaN(ms) ||
    date.getUTCDate() !== Number(d) ||
    date.getUTCMonth() !== Number(mo) - 1 ||
    Number(h) > 23 ||
    Number(mi) > 59 ||
    Number(s) > 59
  ) {
    return undefined;
  }
  let offsetMin = 0;
  if (zone !== 'Z') {
    const sign = zone![0] === '-' ? -1 : 1;
    const [oh, om] = zone!.slice(1).split(':').map(Number) as [number, number];
    offsetMin = sign * (oh * 60 + om);
  }
  const nanosFrac = BigInt((frac ?? '').slice(0, 9).padEnd(9, '0'));
  return (BigInt(ms) - BigInt(offsetMin) * 60_000n) * 1_000_000n + nanosFrac;
}

export class LeaseStore {
  private readonly db: MetadataDb;
  private readonly stmts: {
    get: Statement;
    insert: Statement;
    del: Statement;
    list: Statement;
    addRes: Statement;
    delRes: Statement;
    listRes: Statement;
  };

  constructor(db: MetadataDb) {
    this.db = db;
    const q = (s: string): Statement => db.sql.prepare(s);
    this.stmts = {
      get: q('SELECT id, labels, created_at FROM leases WHERE namespace = ? AND id = ?'),
      insert: q('INSERT INTO leases (namespace, id, labels, created_at) VALUES (?, ?, ?, ?)'),
      del: q('DELETE FROM leases WHERE namespace = ? AND id = ?'),
      list: q('SELECT id, labels, created_at FROM leases WHERE namespace = ? ORDER BY id'),
      addRes: q(
        'INSERT INTO lease_resources (namespace, lease, type, id) VALUES (?, ?, ?, ?) ON CONFLICT DO NOTHING',
      ),
      delRes: q('DELETE FROM lease_resources WHERE namespace = ? AND lease = ? AND type = ? AND id = ?'),
      listRes: q('SELECT type, id FROM lease_resources WHERE namespace = ? AND lease = ? ORDER BY type, id'),
    };
  }

  create(ns: string, lease: { id: string; labels?: Record<string, string> }): LeaseRecord {
    if (lease.id === '') throw invalidArgument('lease id must be provided');
    return this.db.write(() => {
      if (this.stmts.get.get(ns, lease.id)) throw alreadyExists(`lease ${goQuote(lease.id)}: already exists`);
      const now = this.db.clock();
      this.db.ensureNamespace(ns, now);
      const labels = withoutEmpty(lease.labels);
      this.stmts.insert.run(ns, lease.id, encodeMap(labels), now);
      return { id: lease.id, labels, createdAt: nanosToDate(now), createdAtNs: now };
    });
  }

  get(ns: string, id: string): LeaseRecord {
    const row = this.stmts.get.get(ns, id) as LeaseRow | undefined;
    if (!row) throw notFound(`lease ${goQuote(id)}: not found`);
    return toRecord(row);
  }

  delete(ns: string, id: string): void {
    this.db.write(() => {
      if (this.stmts.del.run(ns, id).changes === 0) throw notFound(`lease ${goQuote(id)}: not found`);
      this.db.markDirty();
    });
  }

  list(ns: string, filters: readonly string[]): Promise<LeaseRecord[]> {
    const filter = parseStoreFilters(filters);
    const rows = this.stmts.list.all(ns) as LeaseRow[];
    return selectMatching(filter, rows.map(toRecord), leaseAdaptor, this.db.regex);
  }

  addResource(ns: string, leaseId: string, resource: LeaseResource): void {
    this.db.write(() => {
      this.requireLeaseNamed(ns, leaseId);
      const r = checkLeaseResource(resource);
      this.stmts.addRes.run(ns, leaseId, r.type, r.id);
    });
  }

  deleteResource(ns: string, leaseId: string, resource: LeaseResource): void {
    this.db.write(() => {
      this.requireLeaseNamed(ns, leaseId);
      const r = checkLeaseResource(resource);
      this.stmts.delRes.run(ns, leaseId, r.type, r.id);
      this.db.markDirty();
    });
  }

  listResources(ns: string, leaseId: string): LeaseResource[] {
    return this.db.read(() => {
      this.requireLeaseNamed(ns, leaseId);
      return (this.stmts.listRes.all(ns, leaseId) as Array<{ type: string; id: string }>).map((r) => ({
        id: r.id,
        type: r.type,
      }));
    });
  }

  /**
   * For other stores, inside their transaction: attach a resource to the lease named by a request's
   * `containerd-lease` header. A missing lease is NotFound `lease does not exist`, as in containerd.
   */
  attach(ns: string, leaseId: string, resource: LeaseResource): void {
    if (!this.stmts.get.get(ns, leaseId)) throw notFound('lease does not exist: not found');
    this.stmts.addRes.run(ns, leaseId, resource.type, resource.id);
  }

  /** Detaches a resource from a lease, inside the caller's transaction; a missing lease is no error. */
  detach(ns: string, leaseId: string, resource: LeaseResource): void {
    this.stmts.delRes.run(ns, leaseId, resource.type, resource.id);
  }

  private requireLeaseNamed(ns: string, id: string): void {
    if (!this.stmts.get.get(ns, id)) throw notFound(`lease ${goQuote(id)}: not found`);
  }
}
