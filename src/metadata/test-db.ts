// Test helper: a metadata database in a fresh temporary directory, removed again by cleanup().
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
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
