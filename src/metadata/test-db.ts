// Test helpers: a metadata database in a fresh temporary directory, removed again by cleanup(), and an
// assertion on the kind of error a store throws.
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { type ErrorKind, errorKind } from '../errors.ts';
import { MetadataDb, type MetadataDbOptions, SCHEMA_VERSION } from './db.ts';

export interface TestDb {
  db: MetadataDb;
  path: string;
  reopen(): MetadataDb;
  /**
   * Takes the open database back to schema `version`, as a database written by that version is (its
   * data kept), so that the next reopen migrates it: for tests of a migration.
   */
  stepBackTo(version: number): void;
  cleanup(): void;
}

/** What undoes each migration, by the version it moves to; a new migration adds its line here. */
const UNDO: Readonly<Record<number, string>> = {
  3: 'DROP TABLE repository_blobs',
  4: 'ALTER TABLE ingests DROP COLUMN shared',
  5: 'DROP TABLE snapshot_sequences; ALTER TABLE snapshots DROP COLUMN seq',
};

export function openTestDb(options: MetadataDbOptions = {}): TestDb {
  const dir = mkdtempSync(join(tmpdir(), 'strata-meta-'));
  const path = join(dir, 'meta.db');
  const t: TestDb = {
    db: new MetadataDb(path, options),
    path,
    reopen() {
      t.db.close();
      t.db = new MetadataDb(path, options);
      return t.db;
    },
    stepBackTo(version) {
      for (let v = SCHEMA_VERSION; v > version; v--) {
        const undo = UNDO[v];
        if (undo === undefined) throw new Error(`test-db.ts has no undo for schema version ${v}`);
        t.db.sql.exec(undo);
      }
      t.db.sql.prepare('UPDATE schema_version SET version = ?').run(version);
    },
    cleanup() {
      t.db.close();
      rmSync(dir, { recursive: true, force: true });
    },
  };
  return t;
}

/** Asserts that `fn` throws a StrataError of `kind` (and, when given, exactly `message`). */
export function throwsKind(fn: () => unknown, kind: ErrorKind, message?: string): void {
  assert.throws(fn, (err: unknown) => {
    assert.equal(errorKind(err), kind, String(err));
    if (message !== undefined) assert.equal((err as Error).message, message);
    return true;
  });
}
