// Mark-and-sweep garbage collection over the metadata database, following containerd's scheme. Nothing
// parses manifests here: the graph is what clients recorded in labels (pull sets
// `containerd.io/gc.ref.content.*` on manifests and indexes, unpack sets `gc.ref.snapshot.<snapshotter>`).
//
// Roots: images (unless their `gc.expire` passed), unexpired leases and everything they hold, content and
// snapshots labelled `gc.root` or with a future `gc.expire`, ingests whose expiry has not passed.
// Edges: image → target; labels `gc.ref.content[./…]`, `gc.ref.snapshot.<sn>[/…]`, `gc.ref.image[./…]` on
// images, content and snapshots; snapshot → parent; back references `gc.bref.*` from child to parent.
// A lease labelled `gc.flat` holds only its direct resources, not what they reference.
import type { Digest } from '../oci/digest.ts';
import { decodeMap, type MetadataDb, type Nanos } from './db.ts';
import { LABEL_GC_EXPIRE, LABEL_GC_FLAT, parseRfc3339 } from './leases.ts';

export const LABEL_GC_ROOT = 'containerd.io/gc.root';
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
  images: Array<{ namespace: string; name: string }>;
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

/** Runs one collection in a single write transaction and returns what it removed. */
export function collectGarbage(db: MetadataDb, opts: GcOptions = {}): GcResult {
  return db.write(() => {
    const now = opts.now ?? db.clock();
    const sql = db.sql;
    const edges = new Map<string, string[]>();
    const addEdge = (from: string, to: string): void => {
      const list = edges.get(from);
      if (list) list.push(to);
      else edges.set(from, [to]);
    };
    const roots: string[] = [];
    const flatRoots: string[] = [];
    const result: GcResult = {
      content: [],
      unreferencedDigests: [],
      snapshots: [],
      ingests: [],
      images: [],
      leases: [],
    };

    // Leases: expired ones are removed; live ones make their resources roots.
    const leases = sql.prepare('SELECT namespace, id, labels FROM leases').all() as Array<{
      namespace: string;
      id: string;
      labels: string;
    }>;
    const liveLeases = new Map<string, boolean>(); // key → flat
    for (const l of leases) {
      const labels = decodeMap(l.labels);
      const exp = expiry(labels);
      if (exp !== undefined && exp < now) {
        result.leases.push({ namespace: l.namespace, id: l.id });
        continue;
      }
      liveLeases.set(`${l.namespace}\u0000${l.id}`, Object.hasOwn(labels, LABEL_GC_FLAT));
    }
    const resources = sql.prepare('SELECT namespace, lease, type, id FROM lease_resources').all() as Array<{
      namespace: string;
      lease: string;
      type: string;
      id: string;
    }>;
    for (const r of resources) {
      const flat = liveLeases.get(`${r.namespace}\u0000${r.lease}`);
      if (flat === undefined) continue;
      let n: string | undefined;
      if (r.type === 'content') n = node('c', r.namespace, r.id);
      else if (r.type === 'images') n = node('i', r.namespace, r.id);
      else if (r.type === 'ingests') n = node('g', r.namespace, r.id);
      else if (r.type.startsWith('snapshots/')) n = node('s', r.namespace, `${r.type.slice(10)}/${r.id}`);
      if (n) (flat ? flatRoots : roots).push(n);
    }

    // Images: roots unless expired; their target and labels are edges.
    const images = sql.prepare('SELECT namespace, name, target_digest, labels FROM images').all() as Array<{
      namespace: string;
      name: string;
      target_digest: string;
      labels: string;
    }>;
    const expiredImages: Array<{ namespace: string; name: string }> = [];
    for (const img of images) {
      const n = node('i', img.namespace, img.name);
      const labels = decodeMap(img.labels);
      addEdge(n, node('c', img.namespace, img.target_digest));
      for (const to of labelRefs(img.namespace, labels)) addEdge(n, to);
      for (const from of backRefs(img.namespace, labels)) addEdge(from, n);
      const exp = expiry(labels);
      if (exp !== undefined && exp < now) expiredImages.push({ namespace: img.namespace, name: img.name });
      else roots.push(n);
    }

    // Content and snapshots: labels give roots and edges.
    const content = sql.prepare('SELECT namespace, digest, labels FROM content').all() as Array<{
      namespace: string;
      digest: string;
      labels: string;
    }>;
    const visitLabelled = (n: string, ns: string, labels: Record<string, string>): void => {
      for (const to of labelRefs(ns, labels)) addEdge(n, to);
      for (const from of backRefs(ns, labels)) addEdge(from, n);
      const exp = expiry(labels);
      if (Object.hasOwn(labels, LABEL_GC_ROOT) || (exp !== undefined && exp >= now)) roots.push(n);
    };
    for (const c of content)
      visitLabelled(node('c', c.namespace, c.digest), c.namespace, decodeMap(c.labels));
    const snapshots = sql
      .prepare('SELECT namespace, snapshotter, key, parent, labels FROM snapshots')
      .all() as Array<{
      namespace: string;
      snapshotter: string;
      key: string;
      parent: string;
      labels: string;
    }>;
    for (const s of snapshots) {
      const n = node('s', s.namespace, `${s.snapshotter}/${s.key}`);
      if (s.parent !== '') addEdge(n, node('s', s.namespace, `${s.snapshotter}/${s.parent}`));
      visitLabelled(n, s.namespace, decodeMap(s.labels));
    }

    // Ingests: alive until their expiry (an ingest without one lives only through a lease).
    const ingests = sql.prepare('SELECT namespace, ref, expires_at FROM ingests').all() as Array<{
      namespace: string;
      ref: string;
      expires_at: bigint | null;
    }>;
    for (const g of ingests) {
      if (g.expires_at !== null && g.expires_at >= now) roots.push(node('g', g.namespace, g.ref));
    }

    // Mark: follow edges from the roots; flat-leased objects are kept without following theirs.
    const marked = new Set<string>();
    const stack = [...roots];
    while (stack.length > 0) {
      const n = stack.pop()!;
      if (marked.has(n)) continue;
      marked.add(n);
      for (const to of edges.get(n) ?? []) if (!marked.has(to)) stack.push(to);
    }
    for (const n of flatRoots) marked.add(n);

    // Sweep.
    const delLease = sql.prepare('DELETE FROM leases WHERE namespace = ? AND id = ?');
    for (const l of result.leases) delLease.run(l.namespace, l.id);
    const delImage = sql.prepare('DELETE FROM images WHERE namespace = ? AND name = ?');
    for (const img of expiredImages) {
      if (marked.has(node('i', img.namespace, img.name))) continue;
      delImage.run(img.namespace, img.name);
      result.images.push(img);
    }
    const delContent = sql.prepare('DELETE FROM content WHERE namespace = ? AND digest = ?');
    for (const c of content) {
      if (marked.has(node('c', c.namespace, c.digest))) continue;
      delContent.run(c.namespace, c.digest);
      result.content.push({ namespace: c.namespace, digest: c.digest as Digest });
    }
    const delSnapshot = sql.prepare(
      'DELETE FROM snapshots WHERE namespace = ? AND snapshotter = ? AND key = ?',
    );
    for (const s of snapshots) {
      if (marked.has(node('s', s.namespace, `${s.snapshotter}/${s.key}`))) continue;
      delSnapshot.run(s.namespace, s.snapshotter, s.key);
      result.snapshots.push({ namespace: s.namespace, snapshotter: s.snapshotter, key: s.key });
    }
    const delIngest = sql.prepare('DELETE FROM ingests WHERE namespace = ? AND ref = ?');
    for (const g of ingests) {
      if (marked.has(node('g', g.namespace, g.ref))) continue;
      delIngest.run(g.namespace, g.ref);
      result.ingests.push({ namespace: g.namespace, ref: g.ref });
    }
    const held = sql.prepare('SELECT 1 FROM content WHERE digest = ? LIMIT 1');
    const removed = new Set(result.content.map((c) => c.digest));
    for (const d of removed) if (held.get(d) === undefined) result.unreferencedDigests.push(d);
    result.unreferencedDigests.sort();
    return result;
  });
}
