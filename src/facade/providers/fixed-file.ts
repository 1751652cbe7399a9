// Fixed specs from a file (YAML or JSON): a map name → ImageSpec in protobuf-JSON form, reloaded when the
// file changes (see WatchedFiles; the file is also checked on use). A bad edit is reported once and the
// previous specs stay in use. A file rewritten in place (`cat new > specs.yaml`) passes through an empty
// state: an empty file never replaces the specs loaded before (`{}` does).
import { parse as parseYaml } from 'yaml';
import { invalidArgument, messageOf, notFound } from '../../errors.ts';
import type { ImageSpec, SpecJsonCodec } from '../spec.ts';
import { WatchedFiles } from '../watched-files.ts';
import type { SpecProvider } from './provider.ts';

/** The fixed-spec file may hold this many specs; it is a debugging aid, not a database. */
export const MAX_FIXED_SPECS = 10_000;

/** The specs in the file's text; undefined for an empty document (no map at all, not even `{}`). */
export function parseFixedSpecs(
  text: string,
  where: string,
  json: SpecJsonCodec,
): Map<string, ImageSpec> | undefined {
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
    out.set(name, json.parse(value, `${where}: spec ${JSON.stringify(name)}`));
  return out;
}

export interface FixedFileOptions {
  /** Reads the specs' protobuf-JSON form. */
  json: SpecJsonCodec;
  /** Told about a reload that failed (the old specs stay). */
  onReloadError?: (err: unknown) => void;
  onReload?: (count: number) => void;
  /** How long the file must be unchanged before it is read (default 100 ms). */
  settleMs?: number;
  /** Watch the file and check it on use (default true); false: only reload() reads it again. */
  watch?: boolean;
}

export class FixedFileSpecProvider implements SpecProvider {
  private readonly file: WatchedFiles<Map<string, ImageSpec>>;

  private constructor(file: WatchedFiles<Map<string, ImageSpec>>) {
    this.file = file;
  }

  static async open(path: string, options: FixedFileOptions): Promise<FixedFileSpecProvider> {
    const where = `fixed specs ${path}`;
    const file = await WatchedFiles.open<Map<string, ImageSpec>>([path], {
      what: where,
      settleMs: options.settleMs,
      watch: options.watch,
      parse: ([bytes], previous) => {
        const specs = parseFixedSpecs(bytes!.toString('utf8'), where, options.json);
        if (specs !== undefined) return specs;
        // Empty is what a rewrite in place looks like halfway; only before anything was loaded is it "none".
        if (previous !== undefined) {
          throw invalidArgument(
            `${where}: empty; the ${previous.size} specs loaded before stay (write {} to remove them all)`,
          );
        }
        return new Map();
      },
      onReload: (specs) => options.onReload?.(specs.size),
      onReloadError: options.onReloadError,
    });
    options.onReload?.(file.value.size);
    return new FixedFileSpecProvider(file);
  }

  get path(): string {
    return this.file.paths[0]!;
  }

  get size(): number {
    return this.file.value.size;
  }

  /** Re-reads the file if it changed or was refused before (SIGHUP; lookups while watching refresh). */
  reload(): Promise<void> {
    return this.file.reread();
  }

  async getSpec(id: string): Promise<ImageSpec> {
    if (this.file.watching) await this.file.refresh();
    const spec = this.file.value.get(id);
    if (!spec) throw notFound(`fixed spec ${JSON.stringify(id)}: not found`);
    return spec;
  }

  close(): void {
    this.file.close();
  }
}
