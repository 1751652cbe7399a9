// Image names read one at a time along the table's key, for callers that walk a namespace's names in
// order without reading every row (the hosted registry's catalog skips from one repository to the next).
import type { MetadataDb, Statement } from './db.ts';

export class ImageNames {
  private readonly atOrAfter: Statement;
  private readonly after: Statement;

  constructor(db: MetadataDb) {
    this.atOrAfter = db.sql
      .prepare('SELECT name FROM images WHERE namespace = ? AND name >= ? ORDER BY name LIMIT 1')
      .pluck();
    this.after = db.sql
      .prepare('SELECT name FROM images WHERE namespace = ? AND name > ? ORDER BY name LIMIT 1')
      .pluck();
  }

  /**
   * The first name of the namespace, in the table's byte order, that is not below `from` (`inclusive`) or is
   * above it; undefined when there is none.
   */
  first(ns: string, from: string, inclusive: boolean): string | undefined {
    return (inclusive ? this.atOrAfter : this.after).get(ns, from) as string | undefined;
  }
}
