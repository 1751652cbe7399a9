// Fixed specs from a file (YAML or JSON): a map name → ImageSpec in protobuf-JSON form. The file is read at
// start (a bad file is an error then) and again whenever it changes (fs.watch on its directory, plus an
// mtime/size check on use, since watchers miss some editors' and Kubernetes' atomic swaps). A bad edit is
// reported once and the previous specs stay in use. A file rewritten in place (`cat new > specs.yaml`, or
// an editor that truncates, then writes) passes through empty and partial states: a file is only read once
// it has been still for a moment, and an empty one never replaces the specs loaded before (`{}` does).
import { type FSWatcher, watch } from 'node:fs';
import { readFile, stat } from 'node:fs/promises';
import { basename, dirname } from 'node:path';
import { parse as parseYaml } from 'yaml';
import { invalidArgument, messageOf, notFound } from '../../errors.ts';
import type { ImageSpec } from '../spec.ts';
import { specFromJson } from './proto.ts';
import type { SpecProvider } from './provider.ts';

/** The fixed-spec file may hold this many specs; it is a debugging aid, not a database. */
export const MAX_FIXED_SPECS = 10_000;
const MAX_FILE_BYTES = 64 * 1024 * 1024;
const DEFAULT_SETTLE_MS = 100;
// A file that keeps changing is read anyway after this many waits.
const MAX_SETTLE_WAITS = 10;

/** The specs in the file's text; undefined for an empty document (no map at all, not even `{}`). */
export function parseFixedSpecs(text: string, where: string): Map<string, ImageSpec> | undefined {
  let doc: unknown;
  try {
    doc = parseYaml(text, { maxAliasCount: 100 });
  } catch (err) {
    throw invalidArgument(`${where}: ${messageOf(err)}`);
  }
  if (doc === null || doc === undefined) return undefined;
  if (typeof doc !== 'object' || Array.isArray(doc)) {
    throw invalidArgument(`${where}: want a map of name to spec`);
  }
  const entries = Object.entries(doc as Record<string, unknown>);
  if (entries.length > MAX_FIXED_SPECS) throw invalidArgument(`${where}: more than ${MAX_FIXED_SPECS} specs`);
  const out = new Map<string, ImageSpec>();
  for (const [name, value] of entries)
    out.set(name, specFromJson(value, `${where}: spec ${JSON.stringify(name)}`));
  return out;
}

export interface FixedFileOptions {
  /** Told about a reload that failed (the old specs stay). */
  onReloadError?: (err: unknown) => void;
  onReload?: (count: number) => void;
  /** How long the file must be unchanged before it is read (default 100 ms). */
  settleMs?: number;
}

interface FileKey {
  key: string;
  mtimeMs: number;
  size: number;
}

export class FixedFileSpecProvider implements SpecProvider {
  readonly path: string;
  private specs = new Map<string, ImageSpec>();
  private key = '';
  /** The last version of the file that was refused, so it is reported once and not read again. */
  private badKey = '';
  private watcher: FSWatcher | undefined;
  private reloading: Promise<void> | undefined;
  private readonly options: FixedFileOptions;

  private constructor(path: string, options: FixedFileOptions) {
    this.path = path;
    this.options = options;
  }

  static async open(path: string, options: FixedFileOptions = {}): Promise<FixedFileSpecProvider> {
    const p = new FixedFileSpecProvider(path, options);
    await p.load();
    try {
      p.watcher = watch(dirname(path), { persistent: false }, (_event, name) => {
        if (name === null || name === basename(path)) void p.reload();
      });
      p.watcher.on('error', () => {});
    } catch {
      // No watcher (e.g. an exotic file system): the check on use still sees changes.
    }
    return p;
  }

  get size(): number {
    return this.specs.size;
  }

  private async fileKey(): Promise<FileKey> {
    const st = await stat(this.path, { bigint: true }).catch((err) => {
      throw notFound(`fixed specs ${this.path}: ${messageOf(err)}`);
    });
    return { key: `${st.ino}:${st.size}:${st.mtimeNs}`, mtimeMs: Number(st.mtimeMs), size: Number(st.size) };
  }

  /** The file's key once it has not changed for `settleMs` (or after a bounded number of waits). */
  private async settledKey(): Promise<FileKey> {
    const settleMs = this.options.settleMs ?? DEFAULT_SETTLE_MS;
    let k = await this.fileKey();
    for (let i = 0; i < MAX_SETTLE_WAITS && k.key !== this.key && k.key !== this.badKey; i++) {
      const age = Date.now() - k.mtimeMs;
      if (age >= settleMs) break;
      await new Promise((r) => setTimeout(r, settleMs - Math.max(age, 0)));
      k = await this.fileKey();
    }
    return k;
  }

  private async load(): Promise<void> {
    const { key, size } = await this.settledKey();
    if (key === this.key || key === this.badKey) return;
    const where = `fixed specs ${this.path}`;
    try {
      if (size > MAX_FILE_BYTES) throw invalidArgument(`${where}: larger than ${MAX_FILE_BYTES} bytes`);
      let specs = parseFixedSpecs(await readFile(this.path, 'utf8'), where);
      if (specs === undefined) {
        // Empty is what a rewrite in place looks like halfway; only before anything was loaded is it "none".
        if (this.key !== '') {
          throw invalidArgument(
            `${where}: empty; the ${this.specs.size} specs loaded before stay (write {} to remove them all)`,
          );
        }
        specs = new Map();
      }
      this.specs = specs;
      this.key = key;
      this.badKey = '';
      this.options.onReload?.(specs.size);
    } catch (err) {
      this.badKey = key;
      throw err;
    }
  }

  private reload(): Promise<void> {
    this.reloading ??= this.load()
      .catch((err) => this.options.onReloadError?.(err))
      .finally(() => {
        this.reloading = undefined;
      });
    return this.reloading;
  }

  async getSpec(id: string): Promise<ImageSpec> {
    await this.reload();
    const spec = this.specs.get(id);
    if (!spec) throw notFound(`fixed spec ${JSON.stringify(id)}: not found`);
    return spec;
  }

  close(): void {
    this.watcher?.close();
  }
}
