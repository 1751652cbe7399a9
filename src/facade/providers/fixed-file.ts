// Fixed specs from a file (YAML or JSON): a map name → ImageSpec in protobuf-JSON form. The file is read at
// start (a bad file is an error then) and again whenever it changes (fs.watch on its directory, plus an
// mtime/size check on use, since watchers miss some editors' and Kubernetes' atomic swaps). A bad edit is
// reported and the previous specs stay in use.
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

export function parseFixedSpecs(text: string, where: string): Map<string, ImageSpec> {
  let doc: unknown;
  try {
    doc = parseYaml(text, { maxAliasCount: 100 });
  } catch (err) {
    throw invalidArgument(`${where}: ${messageOf(err)}`);
  }
  if (doc === null || doc === undefined) return new Map();
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
}

export class FixedFileSpecProvider implements SpecProvider {
  readonly path: string;
  private specs = new Map<string, ImageSpec>();
  private key = '';
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

  private async fileKey(): Promise<string> {
    const st = await stat(this.path, { bigint: true });
    return `${st.ino}:${st.size}:${st.mtimeNs}`;
  }

  private async load(): Promise<void> {
    const key = await this.fileKey().catch((err) => {
      throw notFound(`fixed specs ${this.path}: ${messageOf(err)}`);
    });
    if (key === this.key) return;
    const st = await stat(this.path);
    if (st.size > MAX_FILE_BYTES)
      throw invalidArgument(`fixed specs ${this.path}: larger than ${MAX_FILE_BYTES} bytes`);
    const specs = parseFixedSpecs(await readFile(this.path, 'utf8'), `fixed specs ${this.path}`);
    this.specs = specs;
    this.key = key;
    this.options.onReload?.(specs.size);
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
