// Test helpers: a metadata database in a fresh temporary directory, removed again by cleanup(), and an
// assertion on the kind of error a store throws.
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { type ErrorKind, errorKind } from '../errors.ts';
import { MetadataDb, type MetadataDbOptions } from './db.ts';

export interface TestDb {
  db: MetadataDb;
  path: string;
  reopen(): MetadataDb;
  cleanup(): void;
}

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
