// The write barrier of a sliced collection: while it runs, every row inserted or updated in a table the
// collector reads is recorded (SQLite TEMP triggers into a TEMP table of this connection), so the sweep can
// treat what changed since the scan as live. Deletions are not recorded: they only make things garbage,
// which the next collection finds. TEMP objects belong to this connection alone, vanish with it (a crash
// leaves nothing behind), and see only this connection's writes: see MetadataDb.exclusive.
import type { MetadataDb, Statement } from './db.ts';

/** A row the barrier saw written; `b` is '' where the table has a one-column id. */
export interface TouchedRow {
  table: 'images' | 'content' | 'snapshots' | 'ingests' | 'leases' | 'lease_resources';
  namespace: string;
  a: string;
  b: string;
}

/** Per table, the id columns recorded (one or two). */
const WATCHED: ReadonlyArray<[TouchedRow['table'], string, string]> = [
  ['images', 'NEW.name', "''"],
  ['content', 'NEW.digest', "''"],
  ['snapshots', 'NEW.snapshotter', 'NEW.key'],
  ['ingests', 'NEW.ref', "''"],
  ['leases', 'NEW.id', "''"],
  ['lease_resources', 'NEW.type', 'NEW.id'],
];

// Collections may overlap (direct calls beside the runner's): each gets names of its own.
let installed = 0;

export class WriteBarrier {
  private readonly db: MetadataDb;
  private readonly table: string;
  private readonly triggers: string[] = [];
  private readonly since: Statement;
  private last = 0n;

  /** Starts recording; call before the first row is read. */
  constructor(db: MetadataDb) {
    this.db = db;
    const id = ++installed;
    this.table = `gc_touched_${id}`;
    const sql: string[] = [
      `CREATE TEMP TABLE ${this.table} (tbl TEXT NOT NULL, namespace TEXT NOT NULL, a TEXT NOT NULL, b TEXT NOT NULL)`,
    ];
    for (const [tbl, a, b] of WATCHED) {
      for (const event of ['INSERT', 'UPDATE']) {
        const name = `${this.table}_${tbl}_${event.toLowerCase()}`;
        this.triggers.push(name);
        sql.push(
          `CREATE TEMP TRIGGER ${name} AFTER ${event} ON main.${tbl} BEGIN
             INSERT INTO ${this.table} (tbl, namespace, a, b) VALUES ('${tbl}', NEW.namespace, ${a}, ${b});
           END`,
        );
      }
    }
    db.sql.exec(`${sql.join(';\n')};`);
    this.since = db.sql.prepare(
      `SELECT rowid, tbl AS "table", namespace, a, b FROM temp.${this.table} WHERE rowid > ? ORDER BY rowid`,
    );
  }

  /** What was written since the last call (or since the barrier went up). */
  taken(): TouchedRow[] {
    const rows = this.since.all(this.last) as Array<TouchedRow & { rowid: bigint }>;
    if (rows.length > 0) this.last = rows[rows.length - 1]!.rowid;
    return rows;
  }

  /** Stops recording and drops the record. */
  remove(): void {
    if (!this.db.sql.open) return;
    const sql = this.triggers.map((t) => `DROP TRIGGER IF EXISTS temp.${t}`);
    sql.push(`DROP TABLE IF EXISTS temp.${this.table}`);
    this.db.sql.exec(`${sql.join(';\n')};`);
  }
}
