// The inputs of the last successful build of each source (remote, Dockerfile and context paths, or a
// reference), on disk, so that the next build can say what changed even after a restart. Bounded in
// number of sources; the oldest go first.
import { createHash } from 'node:crypto';
import { mkdir, readdir, readFile, rename, rm, stat, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import type { BuildInputs } from './build-key.ts';

export interface HistoryEntry {
  key: string;
  /** A Dockerfile build's inputs (a reference source has only its key). */
  inputs?: BuildInputs;
  /** Unix ms. */
  builtAt: number;
}

export class SourceHistory {
  private readonly dir: string;
  private readonly max: number;
  private writes = 0;

  constructor(dir: string, maxSources = 2000) {
    this.dir = dir;
    this.max = maxSources;
  }

  private path(source: string): string {
    return join(this.dir, `${createHash('sha256').update(source).digest('hex')}.json`);
  }

  async get(source: string): Promise<HistoryEntry | undefined> {
    try {
      return JSON.parse(await readFile(this.path(source), 'utf8')) as HistoryEntry;
    } catch {
      return undefined;
    }
  }

  async put(source: string, entry: HistoryEntry): Promise<void> {
    await mkdir(this.dir, { recursive: true, mode: 0o700 });
    const path = this.path(source);
    await writeFile(`${path}.tmp`, JSON.stringify(entry));
    await rename(`${path}.tmp`, path);
    if (++this.writes % 100 === 0) await this.prune();
  }

  private async prune(): Promise<void> {
    const names = (await readdir(this.dir)).filter((n) => n.endsWith('.json'));
    if (names.length <= this.max) return;
    const aged = await Promise.all(
      names.map(async (n) => ({ n, t: (await stat(join(this.dir, n))).mtimeMs })),
    );
    aged.sort((a, b) => a.t - b.t);
    for (const { n } of aged.slice(0, names.length - this.max)) await rm(join(this.dir, n), { force: true });
  }
}
