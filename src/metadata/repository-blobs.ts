// Which repositories of a namespace a blob belongs to, as distribution keeps per-repository blob links:
// the hosted repositories share one namespace (and the one content store), and a digest known to one
// repository must not be readable, mountable or referenced through another. A row names a blob the
// namespace holds; it is no GC root, and it goes when the namespace's content row goes (foreign key).
import { notFound } from '../errors.ts';
import type { Digest } from '../oci/digest.ts';
import { ContentMeta } from './content-labels.ts';
import type { MetadataDb, Statement } from './db.ts';

export class RepositoryBlobs {
  private readonly db: MetadataDb;
  private readonly content: ContentMeta;
  private readonly stmts: {
    has: Statement;
    add: Statement;
    del: Statement;
    others: Statement;
  };

  constructor(db: MetadataDb) {
    this.db = db;
    this.content = new ContentMeta(db);
    const q = (s: string): Statement => db.sql.prepare(s);
    this.stmts = {
      has: q('SELECT 1 FROM repository_blobs WHERE namespace = ? AND digest = ? AND repository = ?'),
      add: q(
        'INSERT INTO repository_blobs (namespace, digest, repository) VALUES (?, ?, ?) ON CONFLICT DO NOTHING',
      ),
      del: q('DELETE FROM repository_blobs WHERE namespace = ? AND digest = ? AND repository = ?'),
      others: q('SELECT 1 FROM repository_blobs WHERE namespace = ? AND digest = ? LIMIT 1'),
    };
  }

  has(ns: string, repository: string, digest: string): boolean {
    return this.stmts.has.get(ns, digest, repository) !== undefined;
  }

  /** Makes the namespace's blob a member of the repository; NotFound when the namespace does not hold it. */
  add(ns: string, repository: string, digest: Digest): void {
    this.db.write(() => {
      if (!this.content.has(ns, digest)) throw notFound(`content digest ${digest}: not found`);
      this.stmts.add.run(ns, digest, repository);
    });
  }

  /**
   * Takes the blob out of the repository (NotFound when it is not a member). When no other repository
   * has it, the namespace lets go of it too, so the next collection frees the bytes unless another
   * namespace holds them. Returns whether the namespace let go.
   */
  remove(ns: string, repository: string, digest: Digest): boolean {
    return this.db.write(() => {
      if (this.stmts.del.run(ns, digest, repository).changes === 0)
        throw notFound(`blob ${digest} is not a member of ${repository}`);
      if (this.stmts.others.get(ns, digest) !== undefined) return false;
      this.content.remove(ns, digest);
      return true;
    });
  }
}
