// The embedded metadata database: one SQLite file holding, per namespace, images, content membership and
// labels, leases and their resources, ingests and snapshots. Blob bytes live in the shared content store,
// not here. Every write runs in an IMMEDIATE transaction; times are server-set nanoseconds since the epoch.
import Database from 'better-sqlite3';
import { internal } from '../errors.ts';
import { RegexRunner } from './filters/regex-runner.ts';

export type Statement = Database.Statement;

/** Nanoseconds since the Unix epoch. */
export type Nanos = bigint;

export interface MetadataDbOptions {
  /** Milliseconds a writer waits for another connection's lock before failing. */
  busyTimeoutMs?: number;
  /** Time source, for tests; must not go backwards. */
  clock?: () => Nanos;
  /**
   * Share the file with other connections (SQLite's NORMAL locking). Off by default: the connection
   * holds its lock until closed, as containerd holds a flock on its bolt database, which spares every
   * read the lock, unlock and file checks SQLite otherwise makes per transaction.
   */
  shared?: boolean;
}

// Each entry moves the schema one version up; never edit a released entry, append a new one.
const MIGRATIONS: readonly string[] = [
  `
  CREATE TABLE namespaces (
    name TEXT PRIMARY KEY,
    labels TEXT NOT NULL DEFAULT '{}',
    created_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL
  ) WITHOUT ROWID;

  CREATE TABLE images (
    namespace TEXT NOT NULL REFERENCES namespaces(name),
    name TEXT NOT NULL,
    target_media_type TEXT NOT NULL,
    target_digest TEXT NOT NULL,
    target_size INTEGER NOT NULL,
    target_annotations TEXT NOT NULL DEFAULT '{}',
    labels TEXT NOT NULL DEFAULT '{}',
    created_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL,
    PRIMARY KEY (namespace, name)
  ) WITHOUT ROWID;

  CREATE TABLE content (
    namespace TEXT NOT NULL REFERENCES namespaces(name),
    digest TEXT NOT NULL,
    size INTEGER NOT NULL,
    labels TEXT NOT NULL DEFAULT '{}',
    created_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL,
    PRIMARY KEY (namespace, digest)
  ) WITHOUT ROWID;
  CREATE INDEX content_by_digest ON content(digest);

  CREATE TABLE leases (
    namespace TEXT NOT NULL REFERENCES namespaces(name),
    id TEXT NOT NULL,
    labels TEXT NOT NULL DEFAULT '{}',
    created_at INTEGER NOT NULL,
    PRIMARY KEY (namespace, id)
  ) WITHOUT ROWID;

  CREATE TABLE lease_resources (
    namespace TEXT NOT NULL,
    lease TEXT NOT NULL,
    type TEXT NOT NULL,
    id TEXT NOT NULL,
    PRIMARY KEY (namespace, lease, type, id),
    FOREIGN KEY (namespace, lease) REFERENCES leases(namespace, id) ON DELETE CASCADE
  ) WITHOUT ROWID;

  CREATE TABLE ingests (
    namespace TEXT NOT NULL REFERENCES namespaces(name),
    ref TEXT NOT NULL,
    expected TEXT NOT NULL DEFAULT '',
    total INTEGER NOT NULL DEFAULT 0,
    created_at INTEGER NOT NULL,
    expires_at INTEGER,
    PRIMARY KEY (namespace, ref)
  ) WITHOUT ROWID;

  CREATE TABLE snapshots (
    namespace TEXT NOT NULL REFERENCES namespaces(name),
    snapshotter TEXT NOT NULL,
    key TEXT NOT NULL,
    kind TEXT NOT NULL,
    parent TEXT NOT NULL DEFAULT '',
    labels TEXT NOT NULL DEFAULT '{}',
    created_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL,
    backing_id TEXT NOT NULL,
    PRIMARY KEY (namespace, snapshotter, key)
  ) WITHOUT ROWID;
  `,
  // Snapshots: the usage recorded at commit (a committed tree never changes), children by parent, and
  // the backing directory id for the snapshotter's cleanup and mount checks.
  `
  ALTER TABLE snapshots ADD COLUMN usage_size INTEGER NOT NULL DEFAULT 0;
  ALTER TABLE snapshots ADD COLUMN usage_inodes INTEGER NOT NULL DEFAULT 0;
  CREATE INDEX snapshots_by_parent ON snapshots(namespace, snapshotter, parent);
  CREATE INDEX snapshots_by_backing_id ON snapshots(snapshotter, backing_id);
  `,
  // Blob membership per repository of a namespace (hosted repositories: a blob is visible in a repository
  // only when it was pushed or mounted there, or a manifest pushed there references it). A row is no GC
  // root and goes with the namespace's content row. Existing hosted data (then always the namespace
  // `strata-hosted`, image records `<repo>@<digest>` and `<repo>:<tag>`) gets the rows its manifests
  // imply: the config and layers (`gc.ref.content.config.*`, `.l.*`) each stored manifest references.
  `
  CREATE TABLE repository_blobs (
    namespace TEXT NOT NULL,
    digest TEXT NOT NULL,
    repository TEXT NOT NULL,
    PRIMARY KEY (namespace, digest, repository),
    FOREIGN KEY (namespace, digest) REFERENCES content(namespace, digest) ON DELETE CASCADE
  ) WITHOUT ROWID;

  INSERT OR IGNORE INTO repository_blobs (namespace, digest, repository)
  SELECT i.namespace, j.value,
    substr(i.name, 1, (CASE WHEN instr(i.name, '@') > 0 THEN instr(i.name, '@') ELSE instr(i.name, ':') END) - 1)
  FROM images i
  JOIN content m ON m.namespace = i.namespace AND m.digest = i.target_digest
  JOIN json_each(m.labels) j
  JOIN content b ON b.namespace = i.namespace AND b.digest = j.value
  WHERE i.namespace = 'strata-hosted'
    AND (instr(i.name, '@') > 0 OR instr(i.name, ':') > 0)
    AND (j.key LIKE 'containerd.io/gc.ref.content.config.%' OR j.key LIKE 'containerd.io/gc.ref.content.l.%');
  `,
  // Ingests: whether the writer stands for a blob already on disk, with no bytes of its own (containerd's
  // shared writer, which has no ingest in its blob store and so no status).
  `
  ALTER TABLE ingests ADD COLUMN shared INTEGER NOT NULL DEFAULT 0;
  -- Records from before held their expected content against the GC whatever the writer did; they keep it.
  UPDATE ingests SET shared = 1 WHERE expected <> '';
  `,
  // Snapshots: containerd's per namespace and snapshotter sequence, which numbers every snapshot made and
  // every commit (its backend key `<namespace>/<seq>/<key>` shows in some of its messages). Existing
  // snapshots are numbered in the order they were made.
  `
  ALTER TABLE snapshots ADD COLUMN seq INTEGER NOT NULL DEFAULT 0;
  CREATE TABLE snapshot_sequences (
    namespace TEXT NOT NULL,
    snapshotter TEXT NOT NULL,
    last INTEGER NOT NULL,
    PRIMARY KEY (namespace, snapshotter)
  ) WITHOUT ROWID;
  UPDATE snapshots SET seq = numbered.n FROM (
    SELECT namespace AS ns, snapshotter AS sn, key AS k,
      row_number() OVER (PARTITION BY namespace, snapshotter ORDER BY created_at, key) AS n
    FROM snapshots
  ) AS numbered
  WHERE snapshots.namespace = numbered.ns AND snapshots.snapshotter = numbered.sn AND snapshots.key = numbered.k;
  INSERT INTO snapshot_sequences (namespace, snapshotter, last)
  SELECT namespace, snapshotter, max(seq) FROM snapshots GROUP BY namespace, snapshotter;
  `,
];

export const SCHEMA_VERSION = MIGRATIONS.length;

/** A clock that follows wall time at nanosecond resolution and never returns the same value twice. */
export function monotonicClock(): () => Nanos {
  const base = BigInt(Date.now()) * 1_000_000n - process.hrtime.bigint();
  let last = 0n;
  return () => {
    let now = base + process.hrtime.bigint();
    if (now <= last) now = last + 1n;
    last = now;
    return now;
  };
}

export const nanosToDate = (n: Nanos): Date => new Date(Number(n / 1_000_000n));
export const dateToNanos = (d: Date): Nanos => BigInt(d.getTime()) * 1_000_000n;

export class MetadataDb {
  readonly sql: Database.Database;
  readonly clock: () => Nanos;
  /**
   * Whether this connection alone writes the file (not opened `shared`): then what it runs between two of
   * its own statements is all that changed, which the collector's write barrier relies on.
   */
  readonly exclusive: boolean;
  /** Runs the `~=` tests of listings off the event loop; its worker starts on the first one. */
  readonly regex = new RegexRunner();
  private readonly ensureNs: Statement;
  private readonly dirtyListeners = new Set<() => void>();
  private readonly mutationListeners = new Set<() => void>();
  /** What `afterCommit` queued in the write transaction under way. */
  private afterCommits: Array<() => void> = [];
  /** Deletions since open; a GC scheduler watches this (containerd's `dirty` counter). */
  dirty = 0;

  constructor(path: string, options: MetadataDbOptions = {}) {
    this.clock = options.clock ?? monotonicClock();
    this.exclusive = !options.shared;
    this.sql = new Database(path, { timeout: options.busyTimeoutMs ?? 5000 });
    try {
      // Before WAL is entered, so the WAL index lives in this process's memory instead of a -shm file.
      if (!options.shared) this.sql.pragma('locking_mode = EXCLUSIVE');
      this.sql.pragma('journal_mode = WAL');
      // FULL: a committed change survives power loss, as containerd's bolt commits do. WAL keeps it to
      // one fsync per transaction.
      this.sql.pragma('synchronous = FULL');
      this.sql.pragma('foreign_keys = ON');
      // Timestamps are nanoseconds, beyond a double's exact range: read every integer as a bigint.
      this.sql.defaultSafeIntegers(true);
      this.migrate();
    } catch (err) {
      this.sql.close();
      throw err;
    }
    this.ensureNs = this.sql.prepare(
      'INSERT INTO namespaces (name, labels, created_at, updated_at) VALUES (?, ?, ?, ?) ON CONFLICT DO NOTHING',
    );
  }

  private migrate(): void {
    this.sql.exec('CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)');
    const row = this.sql.prepare('SELECT version FROM schema_version').get() as
      | { version: bigint }
      | undefined;
    const current = row ? Number(row.version) : 0;
    if (current > MIGRATIONS.length) {
      throw internal(
        `metadata database schema version ${current} is newer than this program's ${MIGRATIONS.length}`,
      );
    }
    const apply = this.sql.transaction(() => {
      for (let v = current; v < MIGRATIONS.length; v++) this.sql.exec(MIGRATIONS[v]!);
      this.sql.prepare('DELETE FROM schema_version').run();
      this.sql.prepare('INSERT INTO schema_version (version) VALUES (?)').run(MIGRATIONS.length);
    });
    if (current < MIGRATIONS.length) apply.immediate();
  }

  get schemaVersion(): number {
    const row = this.sql.prepare('SELECT version FROM schema_version').get() as { version: bigint };
    return Number(row.version);
  }

  /** Runs fn in a write transaction (nested calls become savepoints). */
  write<T>(fn: () => T): T {
    const outermost = !this.sql.inTransaction;
    const queued = this.afterCommits.length;
    let result: T;
    try {
      result = this.sql.transaction(fn).immediate();
    } catch (err) {
      // Rolled back (to its savepoint when nested): what it queued never happened.
      this.afterCommits.length = queued;
      throw err;
    }
    if (outermost) {
      const after = this.afterCommits;
      this.afterCommits = [];
      for (const listener of this.mutationListeners) listener();
      for (const fn of after) fn();
    }
    return result;
  }

  /**
   * Inside a write: calls fn once the outermost write transaction has committed, or never when the change
   * that queued it rolls back. For telling others of a change only once it is there to be seen.
   */
  afterCommit(fn: () => void): void {
    if (!this.sql.inTransaction) throw new Error('afterCommit outside a write transaction');
    this.afterCommits.push(fn);
  }

  /** Runs fn in a read transaction: one consistent snapshot. */
  read<T>(fn: () => T): T {
    return this.sql.transaction(fn).deferred();
  }

  /** Namespaces come into being on first write, as in containerd. Call inside a write transaction. */
  ensureNamespace(ns: string, now: Nanos = this.clock()): void {
    this.ensureNs.run(ns, '{}', now, now);
  }

  /** Records that something was deleted, so a collection may free space. */
  markDirty(): void {
    this.dirty++;
    for (const fn of this.dirtyListeners) fn();
  }

  /** Calls fn after each deletion; returns the unsubscribe function. */
  onDirty(fn: () => void): () => void {
    this.dirtyListeners.add(fn);
    return () => this.dirtyListeners.delete(fn);
  }

  /** Calls fn after each committed write transaction; returns the unsubscribe function. */
  onMutation(fn: () => void): () => void {
    this.mutationListeners.add(fn);
    return () => this.mutationListeners.delete(fn);
  }

  close(): void {
    void this.regex.close();
    if (this.sql.open) this.sql.close();
  }
}

/** Label maps are stored as JSON objects. Parsing keeps `__proto__` as an ordinary own key. */
export function decodeMap(json: string): Record<string, string> {
  const parsed: unknown = JSON.parse(json);
  if (typeof parsed !== 'object' || parsed === null || Array.isArray(parsed)) return {};
  const map = parsed as Record<string, unknown>;
  // What encodeMap wrote holds only strings: hand the parsed object over as it is (no copy per read).
  for (const key of Object.keys(map)) {
    if (typeof map[key] !== 'string') {
      return Object.fromEntries(
        Object.entries(map).filter((e): e is [string, string] => typeof e[1] === 'string'),
      );
    }
  }
  return map as Record<string, string>;
}

/** Plain JSON.stringify: List's SQL prefilter (filters/prefilter.ts) looks for its `"key":"value"` text. */
export function encodeMap(map: Readonly<Record<string, string>> | undefined): string {
  return JSON.stringify(map ?? {});
}
