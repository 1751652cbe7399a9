// Namespaces as containerd's metadata store keeps them: a namespace exists once anything is written in it
// (or it is created explicitly), carries labels, and can only be deleted when it holds no images, blobs or
// snapshots. Leases and ingests go with it, as they do with containerd's bucket. Names are validated at
// the API edge (containerd's identifier rule); labels here.
import { alreadyExists, failedPrecondition, invalidArgument, notFound } from '../errors.ts';
import { decodeMap, encodeMap, type MetadataDb, type Statement } from './db.ts';
import { getEntry, goQuote, setEntry, validateLabels, withoutEmpty } from './labels.ts';

export interface NamespaceRecord {
  name: string;
  labels: Record<string, string>;
}

export class NamespaceStore {
  private readonly db: MetadataDb;
  private readonly stmts: {
    get: Statement;
    list: Statement;
    insert: Statement;
    setLabels: Statement;
    del: Statement;
    hasImages: Statement;
    hasContent: Statement;
    snapshotters: Statement;
    delLeases: Statement;
    ingestRefs: Statement;
    delIngests: Statement;
    delSequences: Statement;
  };

  constructor(db: MetadataDb) {
    this.db = db;
    const q = (s: string): Statement => db.sql.prepare(s);
    this.stmts = {
      get: q('SELECT name, labels FROM namespaces WHERE name = ?'),
      list: q('SELECT name, labels FROM namespaces ORDER BY name'),
      insert: q('INSERT INTO namespaces (name, labels, created_at, updated_at) VALUES (?, ?, ?, ?)'),
      setLabels: q('UPDATE namespaces SET labels = ?, updated_at = ? WHERE name = ?'),
      del: q('DELETE FROM namespaces WHERE name = ?'),
      delSequences: q('DELETE FROM snapshot_sequences WHERE namespace = ?'),
      hasImages: q('SELECT 1 FROM images WHERE namespace = ? LIMIT 1'),
      hasContent: q('SELECT 1 FROM content WHERE namespace = ? LIMIT 1'),
      snapshotters: q('SELECT DISTINCT snapshotter FROM snapshots WHERE namespace = ? ORDER BY snapshotter'),
      delLeases: q('DELETE FROM leases WHERE namespace = ?'),
      ingestRefs: q('SELECT ref FROM ingests WHERE namespace = ? ORDER BY ref'),
      delIngests: q('DELETE FROM ingests WHERE namespace = ?'),
    };
  }

  /** The namespace's labels; a namespace nobody wrote to yet has none (containerd answers, not NotFound). */
  get(name: string): NamespaceRecord {
    const row = this.stmts.get.get(name) as { name: string; labels: string } | undefined;
    return { name, labels: row ? decodeMap(row.labels) : {} };
  }

  /** Every namespace that exists, explicitly created or implied by a write, by name. */
  list(): NamespaceRecord[] {
    const rows = this.stmts.list.all() as Array<{ name: string; labels: string }>;
    return rows.map((r) => ({ name: r.name, labels: decodeMap(r.labels) }));
  }

  create(name: string, labels: Record<string, string> = {}): NamespaceRecord {
    validateLabels('namespace.Labels', labels);
    return this.db.write(() => {
      if (this.stmts.get.get(name)) throw alreadyExists(`namespace ${goQuote(name)}: already exists`);
      const now = this.db.clock();
      this.stmts.insert.run(name, encodeMap(withoutEmpty(labels)), now, now);
      return this.get(name);
    });
  }

  /**
   * containerd's namespace update: with mask paths only `labels.<key>` (an absent or empty value deletes
   * the key); without a mask the labels are replaced. Updating a namespace that does not exist creates it.
   */
  update(name: string, labels: Record<string, string>, fieldPaths: readonly string[] = []): NamespaceRecord {
    return this.db.write(() => {
      const now = this.db.clock();
      this.db.ensureNamespace(name, now);
      let next: Record<string, string>;
      if (fieldPaths.length === 0) {
        next = { ...labels };
      } else {
        next = this.get(name).labels;
        for (const path of fieldPaths) {
          if (!path.startsWith('labels.')) {
            throw invalidArgument(`cannot update ${goQuote(path)} field: invalid argument`);
          }
          const key = path.slice('labels.'.length);
          setEntry(next, key, getEntry(labels, key));
        }
      }
      validateLabels('namespace.Labels', next);
      this.stmts.setLabels.run(encodeMap(withoutEmpty(next)), now, name);
      return this.get(name);
    });
  }

  /**
   * FailedPrecondition while the namespace still holds images, blobs or snapshots; NotFound if absent.
   * Returns the refs of the ingests that went with it: their data on disk is the caller's to delete, or a
   * writer of the same ref in a namespace of that name would later resume those bytes.
   */
  delete(name: string): string[] {
    return this.db.write(() => {
      const held: string[] = [];
      if (this.stmts.hasImages.get(name)) held.push('images');
      if (this.stmts.hasContent.get(name)) held.push('blobs');
      for (const r of this.stmts.snapshotters.all(name) as Array<{ snapshotter: string }>) {
        held.push(`snapshots on ${goQuote(r.snapshotter)} snapshotter`);
      }
      if (held.length > 0) {
        throw failedPrecondition(
          `namespace ${goQuote(name)} must be empty, but it still has ${held.join(', ')}: failed precondition`,
        );
      }
      if (!this.stmts.get.get(name)) throw notFound(`namespace ${goQuote(name)}: not found`);
      const ingests = (this.stmts.ingestRefs.all(name) as Array<{ ref: string }>).map((r) => r.ref);
      this.stmts.delLeases.run(name);
      this.stmts.delIngests.run(name);
      this.stmts.del.run(name);
      // containerd drops the namespace's buckets, their sequences with them: numbering starts afresh.
      this.stmts.delSequences.run(name);
      this.db.markDirty();
      return ingests;
    });
  }
}
