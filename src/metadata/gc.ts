// Mark-and-sweep garbage collection over the metadata database, following containerd's scheme. Nothing
// parses manifests here: the graph is what clients recorded in labels (pull sets
// `containerd.io/gc.ref.content.*` on manifests and indexes, unpack sets `gc.ref.snapshot.<snapshotter>`).
//
// Roots: images (all of them: containerd 1.6 never collects an image, whatever its labels), unexpired leases
// and everything they hold, content and snapshots labelled `gc.root` or with a future `gc.expire`, ingests
// whose expiry has not passed.
// Edges: image → target; labels `gc.ref.content[./…]`, `gc.ref.snapshot.<sn>[/…]`, `gc.ref.image[./…]` on
// images, content and snapshots; snapshot → parent; ingest → its expected content (when it shares the bytes
// on disk); back references
// `gc.bref.*` from child to parent.
// A lease labelled `gc.flat` holds its direct resources and what they need (a snapshot's parents, an
// image's target), not what their labels reference.
import type { Digest } from '../oci/digest.ts';
import { decodeMap, type MetadataDb, type Nanos } from './db.ts';
import { LABEL_GC_EXPIRE, LABEL_GC_FLAT, LABEL_GC_ROOT } from './gc-labels.ts';
import { parseRfc3339 } from './leases.ts';

const REF_CONTENT = 'containerd.io/gc.ref.content';
const REF_IMAGE = 'containerd.io/gc.ref.image';
const REF_SNAPSHOT = 'containerd.io/gc.ref.snapshot.';
const BREF_CONTENT = 'containerd.io/gc.bref.content';
const BREF_IMAGE = 'containerd.io/gc.bref.image';
const BREF_SNAPSHOT = 'containerd.io/gc.bref.snapshot.';

export interface GcResult {
  /** Namespace memberships removed; the blob bytes are shared, see unreferencedDigests. */
  content: Array<{ namespace: string; digest: Digest }>;
  /**
   * Digests removed in this run that no namespace holds any more. Informational: the runner's sweep of the
   * content store deletes their bytes together with any other blob no namespace holds.
   */
  unreferencedDigests: Digest[];
  snapshots: Array<{ namespace: string; snapshotter: string; key: string }>;
  ingests: Array<{ namespace: string; ref: string }>;
  leases: Array<{ namespace: string; id: string }>;
}

type Kind = 'c' | 'i' | 's' | 'g';
const node = (kind: Kind, ns: string, id: string): string => `${kind}\u0000${ns}\u0000${id}`;

/** `prefix` exactly, or prefix followed by `.` or `/` (containerd's naming of several references). */
function isRefKey(key: string, prefix: string): boolean {
  if (!key.startsWith(prefix)) return false;
  if (key.length === prefix.length) return true;
  const sep = key[prefix.length];
  return sep === '.' || sep === '/';
}

/** The snapshotter named in `…snapshot.<snapshotter>[/anything]`, or undefined. */
function snapshotterOf(key: string, prefix: string): string | undefined {
  if (!key.startsWith(prefix)) return undefined;
  const rest = key.slice(prefix.length);
  const name = rest.includes('/') ? rest.slice(0, rest.indexOf('/')) : rest;
  return name === '' ? undefined : name;
}

/** Forward references a labelled object makes. */
function labelRefs(ns: string, labels: Record<string, string>): string[] {
  const out: string[] = [];
  for (const [k, v] of Object.entries(labels)) {
    if (isRefKey(k, REF_CONTENT)) out.push(node('c', ns, v));
    else if (isRefKey(k, REF_IMAGE)) out.push(node('i', ns, v));
    else {
      const sn = snapshotterOf(k, REF_SNAPSHOT);
      if (sn) out.push(node('s', ns, `${sn}/${v}`));
    }
  }
  return out;
}

/** Parents a labelled object attaches itself to (back references). */
function backRefs(ns: string, labels: Record<string, string>): string[] {
  const out: string[] = [];
  for (const [k, v] of Object.entries(labels)) {
    if (isRefKey(k, BREF_CONTENT)) out.push(node('c', ns, v));
    else if (isRefKey(k, BREF_IMAGE)) out.push(node('i', ns, v));
    else {
      const sn = snapshotterOf(k, BREF_SNAPSHOT);
      if (sn) out.push(node('s', ns, `${sn}/${v}`));
    }
  }
  return out;
}

/** Expiry from a `gc.expire` label; an unparsable value means "no expiry" (containerd logs and ignores it). */
function expiry(labels: Record<string, string>): Nanos | undefined {
  const v = labels[LABEL_GC_EXPIRE];
  return v === undefined ? undefined : parseRfc3339(v);
}

export interface GcOptions {
  /** The collection time; defaults to the database clock. */
  now?: Nanos;
}

/** The reference graph of one collection: roots, flat roots (kept with only what they need) and edges. */
class Graph {
  readonly roots: string[] = [];
  readonly flatRoots: string[] = [];
  /** References made by labels (and an ingest's expected digest): not followed from flat roots. */
  private readonly edges = new Map<string, string[]>();
  /** What an object cannot be without (an image's target, a snapshot's parent): followed from all. */
  private readonly structural = new Map<string, string[]>();

  edge(from: string, to: string): void {
    add(this.edges, from, to);
  }

  needs(from: string, to: string): void {
    add(this.structural, from, to);
  }

  /** An object's label references (forward and back), and whether its labels make it a root. */
  labelled(n: string, ns: string, labels: Record<string, string>, now: Nanos): void {
    for (const to of labelRefs(ns, labels)) this.edge(n, to);
    for (const from of backRefs(ns, labels)) this.edge(from, n);
    const exp = expiry(labels);
    if (Object.hasOwn(labels, LABEL_GC_ROOT) || (exp !== undefined && exp >= now)) this.roots.push(n);
  }

  /**
   * Everything reachable from the roots; from flat-leased objects only what they need (as containerd:
   * a flat snapshot keeps its parents, a flat image its target, neither what their labels name).
   */
  mark(): Set<string> {
    const marked = new Set<string>();
    const walk = (from: readonly string[], maps: readonly Map<string, string[]>[]) => {
      const stack = [...from];
      while (stack.length > 0) {
        const n = stack.pop()!;
        if (marked.has(n)) continue;
        marked.add(n);
        for (const m of maps) for (const to of m.get(n) ?? []) if (!marked.has(to)) stack.push(to);
      }
    };
    walk(this.roots, [this.edges, this.structural]);
    // Whatever the full walk reached is closed under every edge; the rest is reached flat.
    walk(this.flatRoots, [this.structural]);
    return marked;
  }
}

function add(map: Map<string, string[]>, from: string, to: string): void {
  const list = map.get(from);
  if (list) list.push(to);
  else map.set(from, [to]);
}

type Sql = MetadataDb['sql'];
type LeaseRow = { namespace: string; id: string; labels: string };
type ImageRow = { namespace: string; name: string; target_digest: string; labels: string };
type ContentRow = { namespace: string; digest: string; labels: string };
type SnapshotRow = { namespace: string; snapshotter: string; key: string; parent: string; labels: string };
type IngestRow = {
  namespace: string;
  ref: string;
  expected: string;
  shared: bigint;
  expires_at: bigint | null;
};

// Roots and edges, one kind at a time.

/** Live leases make their resources roots (flat ones flat roots); returns the expired leases. */
function leaseRoots(sql: Sql, graph: Graph, now: Nanos): Array<{ namespace: string; id: string }> {
  const expired: Array<{ namespace: string; id: string }> = [];
  const live = new Map<string, boolean>(); // key → flat
  for (const l of sql.prepare('SELECT namespace, id, labels FROM leases').all() as LeaseRow[]) {
    const labels = decodeMap(l.labels);
    const exp = expiry(labels);
    if (exp !== undefined && exp < now) expired.push({ namespace: l.namespace, id: l.id });
    else live.set(`${l.namespace}\u0000${l.id}`, Object.hasOwn(labels, LABEL_GC_FLAT));
  }
  const resources = sql.prepare('SELECT namespace, lease, type, id FROM lease_resources').all() as Array<{
    namespace: string;
    lease: string;
    type: string;
    id: string;
  }>;
  for (const r of resources) {
    const flat = live.get(`${r.namespace}\u0000${r.lease}`);
    if (flat === undefined) continue;
    let n: string | undefined;
    if (r.type === 'content') n = node('c', r.namespace, r.id);
    else if (r.type === 'images') n = node('i', r.namespace, r.id);
    else if (r.type.startsWith('snapshots/')) n = node('s', r.namespace, `${r.type.slice(10)}/${r.id}`);
    // An ingest is never flat in containerd: a flat lease holds it and the content it expects.
    else if (r.type === 'ingests') graph.roots.push(node('g', r.namespace, r.id));
    if (n) (flat ? graph.flatRoots : graph.roots).push(n);
  }
  return expired;
}

/**
 * Images are roots, their target and labels edges. A `gc.expire` label on an image is containerd 2's: 1.6,
 * whose ctr drives this daemon, ignores it, and so does this collector.
 */
function imageRoots(sql: Sql, graph: Graph): void {
  for (const img of sql
    .prepare('SELECT namespace, name, target_digest, labels FROM images')
    .all() as ImageRow[]) {
    const n = node('i', img.namespace, img.name);
    const labels = decodeMap(img.labels);
    graph.needs(n, node('c', img.namespace, img.target_digest));
    for (const to of labelRefs(img.namespace, labels)) graph.edge(n, to);
    for (const from of backRefs(img.namespace, labels)) graph.edge(from, n);
    graph.roots.push(n);
  }
}

function contentRoots(sql: Sql, graph: Graph, now: Nanos): ContentRow[] {
  const rows = sql.prepare('SELECT namespace, digest, labels FROM content').all() as ContentRow[];
  for (const c of rows)
    graph.labelled(node('c', c.namespace, c.digest), c.namespace, decodeMap(c.labels), now);
  return rows;
}

/** Snapshots: labels as for content, plus an edge to the parent. */
function snapshotRoots(sql: Sql, graph: Graph, now: Nanos): SnapshotRow[] {
  const rows = sql
    .prepare('SELECT namespace, snapshotter, key, parent, labels FROM snapshots')
    .all() as SnapshotRow[];
  for (const s of rows) {
    const n = node('s', s.namespace, `${s.snapshotter}/${s.key}`);
    if (s.parent !== '') graph.needs(n, node('s', s.namespace, `${s.snapshotter}/${s.parent}`));
    graph.labelled(n, s.namespace, decodeMap(s.labels), now);
  }
  return rows;
}

/**
 * Ingests are alive until their expiry (an ingest without one lives only through a lease). A live ingest
 * that shares bytes already on disk holds the content it expects, as in containerd 1.6, which records the
 * expected digest of those alone: an ingest still writing its own bytes holds nothing in the namespace.
 */
function ingestRoots(sql: Sql, graph: Graph, now: Nanos): IngestRow[] {
  const rows = sql
    .prepare('SELECT namespace, ref, expected, shared, expires_at FROM ingests')
    .all() as IngestRow[];
  for (const g of rows) {
    const n = node('g', g.namespace, g.ref);
    if (g.shared !== 0n && g.expected !== '') graph.edge(n, node('c', g.namespace, g.expected));
    if (g.expires_at !== null && g.expires_at >= now) graph.roots.push(n);
  }
  return rows;
}

// Sweeps, one kind at a time: what is not marked goes.

function sweepLeases(sql: Sql, expired: GcResult['leases'], result: GcResult): void {
  const del = sql.prepare('DELETE FROM leases WHERE namespace = ? AND id = ?');
  for (const l of expired) del.run(l.namespace, l.id);
  result.leases.push(...expired);
}

function sweepContent(sql: Sql, rows: ContentRow[], marked: Set<string>, result: GcResult): void {
  const del = sql.prepare('DELETE FROM content WHERE namespace = ? AND digest = ?');
  for (const c of rows) {
    if (marked.has(node('c', c.namespace, c.digest))) continue;
    del.run(c.namespace, c.digest);
    result.content.push({ namespace: c.namespace, digest: c.digest as Digest });
  }
  const held = sql.prepare('SELECT 1 FROM content WHERE digest = ? LIMIT 1');
  const removed = new Set(result.content.map((c) => c.digest));
  for (const d of removed) if (held.get(d) === undefined) result.unreferencedDigests.push(d);
  result.unreferencedDigests.sort();
}

function sweepSnapshots(sql: Sql, rows: SnapshotRow[], marked: Set<string>, result: GcResult): void {
  const del = sql.prepare('DELETE FROM snapshots WHERE namespace = ? AND snapshotter = ? AND key = ?');
  for (const s of rows) {
    if (marked.has(node('s', s.namespace, `${s.snapshotter}/${s.key}`))) continue;
    del.run(s.namespace, s.snapshotter, s.key);
    result.snapshots.push({ namespace: s.namespace, snapshotter: s.snapshotter, key: s.key });
  }
}

function sweepIngests(sql: Sql, rows: IngestRow[], marked: Set<string>, result: GcResult): void {
  const del = sql.prepare('DELETE FROM ingests WHERE namespace = ? AND ref = ?');
  for (const g of rows) {
    if (marked.has(node('g', g.namespace, g.ref))) continue;
    del.run(g.namespace, g.ref);
    result.ingests.push({ namespace: g.namespace, ref: g.ref });
  }
}

/** Runs one collection in a single write transaction and returns what it removed. */
export function collectGarbage(db: MetadataDb, opts: GcOptions = {}): GcResult {
  return db.write(() => {
    const now = opts.now ?? db.clock();
    const sql = db.sql;
    const graph = new Graph();
    const expiredLeases = leaseRoots(sql, graph, now);
    imageRoots(sql, graph);
    const content = contentRoots(sql, graph, now);
    const snapshots = snapshotRoots(sql, graph, now);
    const ingests = ingestRoots(sql, graph, now);

    const marked = graph.mark();

    const result: GcResult = {
      content: [],
      unreferencedDigests: [],
      snapshots: [],
      ingests: [],
      leases: [],
    };
    sweepLeases(sql, expiredLeases, result);
    sweepContent(sql, content, marked, result);
    sweepSnapshots(sql, snapshots, marked, result);
    sweepIngests(sql, ingests, marked, result);
    return result;
  });
}
