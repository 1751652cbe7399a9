// Strata's own spec store: one protobuf-JSON file per id under `<dir>/specs/`, written atomically, so the
// CLI can edit it while a facade or `strata spec serve` reads it. Ids follow the repository-name grammar
// (what can appear in /v2/<prefix>remote/<id>/…), so every stored spec is reachable.
import { randomBytes } from 'node:crypto';
import { type FSWatcher, watch } from 'node:fs';
import { mkdir, readdir, readFile, rename, rm, stat, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { invalidArgument, messageOf, notFound } from '../../errors.ts';
import { isValidRepositoryPath, MAX_NAME_LENGTH } from '../../oci/reference.ts';
import { type ImageSpec, type SpecJsonCodec, validateImageSpec } from '../spec.ts';
import type { SpecProvider } from './provider.ts';

const MAX_SPEC_FILE = 16 * 1024 * 1024;
/** The longest file name Linux file systems take (NAME_MAX). */
const MAX_FILE_NAME = 255;

/** The stored file's name: '/' is the only character of the grammar a file name cannot hold. */
const fileNameOf = (id: string): string => `${id.replaceAll('/', '%2F')}.json`;

/** The spec id a file in the store is named for; undefined for a file no put makes (one put by hand). */
function idOfFileName(name: string): string | undefined {
  if (!name.endsWith('.json')) return undefined;
  const id = name.slice(0, -5).replaceAll('%2F', '/');
  try {
    validateSpecId(id);
  } catch {
    return undefined;
  }
  return id;
}

export function validateSpecId(id: string): void {
  if (id === '' || id.length > MAX_NAME_LENGTH || !isValidRepositoryPath(id)) {
    throw invalidArgument(
      `spec id ${JSON.stringify(id)}: want lowercase letters and digits, separated by '.', '_', '-' or '/' (at most ${MAX_NAME_LENGTH} characters)`,
    );
  }
  // A valid id with many '/' can still make a file name the file system refuses.
  const length = fileNameOf(id).length;
  if (length > MAX_FILE_NAME) {
    throw invalidArgument(
      `spec id ${JSON.stringify(id)}: too long to store (${length} characters as a file name, each '/' taking 3, at most ${MAX_FILE_NAME})`,
    );
  }
}

/** A stored spec's version: changes with every put (a put writes a new file). */
export interface StoredSpec {
  id: string;
  version: string;
  mtimeMs: number;
}

export class SpecStore implements SpecProvider {
  readonly dir: string;
  private readonly specsDir: string;
  private readonly tmpDir: string;
  private readonly json: SpecJsonCodec;

  constructor(dir: string, json: SpecJsonCodec) {
    this.dir = dir;
    this.json = json;
    this.specsDir = join(dir, 'specs');
    this.tmpDir = join(dir, 'tmp');
  }

  private fileOf(id: string): string {
    validateSpecId(id);
    return join(this.specsDir, fileNameOf(id));
  }

  async put(id: string, spec: ImageSpec): Promise<void> {
    validateImageSpec(spec, { allowHttpHost: () => true });
    const file = this.fileOf(id);
    await mkdir(this.specsDir, { recursive: true });
    await mkdir(this.tmpDir, { recursive: true });
    const text = `${JSON.stringify(this.json.format(spec), null, 2)}\n`;
    // What getSpec would refuse to read back is not stored.
    if (text.length > MAX_SPEC_FILE) {
      throw invalidArgument(
        `spec ${JSON.stringify(id)}: ${text.length} bytes stored, more than the ${MAX_SPEC_FILE} a spec may take`,
      );
    }
    const tmp = join(this.tmpDir, `${randomBytes(8).toString('hex')}.json`);
    try {
      // On the disk before it takes the spec's name: a crash then leaves the old spec or the new one,
      // never an empty file (which a rename of unflushed data can leave).
      await writeFile(tmp, text, { flag: 'wx', flush: true });
      await rename(tmp, file);
    } finally {
      await rm(tmp, { force: true });
    }
  }

  async getSpec(id: string): Promise<ImageSpec> {
    const file = this.fileOf(id);
    let text: string;
    try {
      text = await readFile(file, 'utf8');
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT')
        throw notFound(`spec ${JSON.stringify(id)}: not found`);
      throw err;
    }
    if (text.length > MAX_SPEC_FILE) throw invalidArgument(`spec ${JSON.stringify(id)}: file too large`);
    let json: unknown;
    try {
      json = JSON.parse(text);
    } catch (err) {
      throw invalidArgument(`spec ${JSON.stringify(id)}: ${messageOf(err)}`);
    }
    return this.json.parse(json, `spec ${JSON.stringify(id)}`);
  }

  async remove(id: string): Promise<void> {
    const file = this.fileOf(id);
    try {
      await rm(file);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT')
        throw notFound(`spec ${JSON.stringify(id)}: not found`);
      throw err;
    }
  }

  /** The version of a stored spec, or undefined when there is none. */
  async versionOf(id: string): Promise<string | undefined> {
    return (await this.statOf(id))?.version;
  }

  private async statOf(id: string): Promise<StoredSpec | undefined> {
    try {
      const st = await stat(this.fileOf(id), { bigint: true });
      return { id, version: `${st.ino}:${st.size}:${st.mtimeNs}`, mtimeMs: Number(st.mtimeMs) };
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
      throw err;
    }
  }

  /** Every stored spec with its version, most recently put first. */
  async stored(): Promise<StoredSpec[]> {
    const out: StoredSpec[] = [];
    for (const id of await this.list()) {
      const s = await this.statOf(id).catch(() => undefined);
      if (s) out.push(s);
    }
    return out.sort((a, b) => b.mtimeMs - a.mtimeMs);
  }

  /**
   * Tells `onChange` the id of every spec put or removed from now on (fs.watch on the store, created if
   * missing). A watcher can miss changes (some network file systems): stored() sees them all.
   */
  async watch(onChange: (id: string) => void): Promise<{ close(): void }> {
    await mkdir(this.specsDir, { recursive: true });
    const watcher: FSWatcher = watch(this.specsDir, { persistent: false }, (_event, name) => {
      const id = name === null ? undefined : idOfFileName(name);
      if (id !== undefined) onChange(id);
    });
    watcher.on('error', () => {});
    return { close: () => watcher.close() };
  }

  async list(): Promise<string[]> {
    let names: string[];
    try {
      names = await readdir(this.specsDir);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return [];
      throw err;
    }
    return names
      .map(idOfFileName)
      .filter((id) => id !== undefined)
      .sort();
  }
}
