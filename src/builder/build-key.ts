// The content-derived identity of a Dockerfile build: a hash of everything the build reads and nothing
// else. The inputs are kept beside the key so that the next build of the same source can say, in plain
// words, what changed.
import { createHash } from 'node:crypto';
import type { ContextEntry } from './context-files.ts';
import { inSlices } from './slices.ts';

/** Raised when the way keys are computed changes, so every image is rebuilt once. */
export const KEY_FORMAT_VERSION = 1;

export interface BuildInputs {
  dockerfilePath: string;
  contextPath: string;
  /** sha256 hex of the Dockerfile's bytes. */
  dockerfile: string;
  /** External images as written (after ARG substitution; with FROM's platform, see imageKey) → their digest reference. */
  images: Record<string, string>;
  /** Context files read: path → `mode id`. */
  files: Record<string, string>;
  buildArgs: Record<string, string>;
  /** ADD sources fetched from the network (named in the key; their content is not). */
  remoteSources: string[];
  /** An opaque version the caller asked to be part of the key (dockerfile_version). */
  version: string;
  /**
   * The builder's platform (os/arch[/variant]), for a Dockerfile that names no image (FROM scratch only):
   * nothing else in its key says which platform its image is for. Others have it in their pinned images.
   */
  platform?: string;
}

const byName = (a: string, b: string) => (a < b ? -1 : a > b ? 1 : 0);

function sorted<T>(record: Record<string, T>): Array<[string, T]> {
  return Object.entries(record).sort(([a], [b]) => byName(a, b));
}

/** Names the work in the error a cancelled build raises. */
const KEYING = 'computing the build key';

/**
 * The files a build reads, path → `mode id`. Made in slices: a large context's files would otherwise hold
 * the event loop in one step.
 */
export async function filesRecord(
  entries: readonly ContextEntry[],
  signal?: AbortSignal,
): Promise<Record<string, string>> {
  const out: Record<string, string> = {};
  await inSlices(entries, signal, KEYING, (e) => {
    out[e.path] = `${e.mode} ${e.id}`;
  });
  return out;
}

/**
 * `names` in the order `byName` gives. A context's files come mostly sorted (a selection is, the
 * .gitattributes added after it may not be): the ascending run is kept in slices, only the few names
 * out of place are sorted in one step, and the two are merged in slices.
 */
async function sortedNames(names: readonly string[], signal?: AbortSignal): Promise<string[]> {
  const run: string[] = [];
  const rest: string[] = [];
  await inSlices(names, signal, KEYING, (name) => {
    const last = run.at(-1);
    (last === undefined || last < name ? run : rest).push(name);
  });
  if (rest.length === 0) return run;
  rest.sort(byName);
  const out: string[] = [];
  let r = 0;
  await inSlices(run, signal, KEYING, (name) => {
    while (r < rest.length && (rest[r] as string) < name) out.push(rest[r++] as string);
    out.push(name);
  });
  for (; r < rest.length; r++) out.push(rest[r] as string);
  return out;
}

/**
 * The build key: sha256 hex over a canonical, line-oriented encoding of the inputs. The files go in
 * slices (see filesRecord); `signal` ends the work between two.
 */
export async function buildKey(inputs: BuildInputs, signal?: AbortSignal): Promise<string> {
  const h = createHash('sha256');
  const line = (...fields: string[]) => h.update(`${fields.map((f) => JSON.stringify(f)).join(' ')}\n`);
  line('strata-build-key', String(KEY_FORMAT_VERSION));
  line('dockerfile-path', inputs.dockerfilePath);
  line('context-path', inputs.contextPath);
  line('dockerfile', inputs.dockerfile);
  line('version', inputs.version);
  // Absent for Dockerfiles with images, so their keys stay as they were.
  if (inputs.platform !== undefined) line('platform', inputs.platform);
  for (const [image, pinned] of sorted(inputs.images)) line('image', image, pinned);
  for (const [name, value] of sorted(inputs.buildArgs)) line('arg', name, value);
  for (const src of [...inputs.remoteSources].sort()) line('remote', src);
  const files = inputs.files;
  // Listing an object's names is one step, not sliceable (about 20 ms per 100k names); the rest is sliced.
  await inSlices(await sortedNames(Object.keys(files), signal), signal, KEYING, (path) => {
    line('file', path, files[path] as string);
  });
  return h.digest('hex');
}

/** How many names a reason lists before it says "and N more". */
const MAX_NAMED = 5;

/** Names the work in the error a cancelled build raises. */
const DESCRIBING = 'comparing the inputs with the last build';

/**
 * The names of one kind of change a reason lists: the first MAX_NAMED in `byName` order, and how many
 * there are. Kept as they come, so a large record is never sorted whole.
 */
class Named {
  readonly first: string[] = [];
  count = 0;

  add(name: string): void {
    this.count++;
    const first = this.first;
    if (first.length === MAX_NAMED && name >= (first[MAX_NAMED - 1] as string)) return;
    let i = first.length;
    while (i > 0 && (first[i - 1] as string) > name) i--;
    first.splice(i, 0, name);
    if (first.length > MAX_NAMED) first.pop();
  }

  listed(kind: string): string | undefined {
    if (this.count === 0) return undefined;
    const more = this.count > MAX_NAMED ? ` and ${this.count - MAX_NAMED} more` : '';
    return `${kind} ${this.first.join(', ')}${more}`;
  }
}

/**
 * What differs between the inputs of the last build of this source and now, in plain words; an empty
 * list when nothing does. The files records go in slices (see filesRecord); `signal` ends the work
 * between two.
 */
export async function describeChanges(
  before: BuildInputs,
  now: BuildInputs,
  signal?: AbortSignal,
): Promise<string[]> {
  const out: string[] = [];
  if (before.dockerfilePath !== now.dockerfilePath) {
    out.push(`Dockerfile path changed from ${before.dockerfilePath} to ${now.dockerfilePath}`);
  }
  if (before.contextPath !== now.contextPath) {
    out.push(`context path changed from ${before.contextPath} to ${now.contextPath}`);
  }
  if (before.dockerfile !== now.dockerfile) out.push('the Dockerfile changed');
  if (before.version !== now.version)
    out.push(`dockerfile_version changed from "${before.version}" to "${now.version}"`);
  if (before.platform !== now.platform)
    out.push(`platform changed from ${before.platform ?? 'none'} to ${now.platform ?? 'none'}`);
  const images = new Set([...Object.keys(before.images), ...Object.keys(now.images)]);
  for (const image of [...images].sort()) {
    const a = before.images[image];
    const b = now.images[image];
    if (a === b) continue;
    if (a === undefined) out.push(`new base image ${image} (${b})`);
    else if (b === undefined) out.push(`base image ${image} no longer used`);
    else out.push(`base image ${image} moved from ${digestPart(a)} to ${digestPart(b)}`);
  }
  const added = new Named();
  const modified = new Named();
  const removed = new Named();
  // Listing a record's names is one step each (as in buildKey); going through them is sliced.
  await inSlices(Object.keys(now.files), signal, DESCRIBING, (path) => {
    const old = before.files[path];
    if (old === undefined) added.add(path);
    else if (old !== now.files[path]) modified.add(path);
  });
  await inSlices(Object.keys(before.files), signal, DESCRIBING, (path) => {
    if (!(path in now.files)) removed.add(path);
  });
  const files = [modified.listed('modified'), added.listed('added'), removed.listed('removed')].filter(
    (s) => s !== undefined,
  );
  if (files.length > 0) out.push(`context files changed: ${files.join('; ')}`);
  // Build args are few (the wire has none) and images bounded by the Dockerfile's size: one step each.
  const args = new Set([...Object.keys(before.buildArgs), ...Object.keys(now.buildArgs)]);
  const changedArgs = [...args].filter((a) => before.buildArgs[a] !== now.buildArgs[a]).sort();
  if (changedArgs.length > 0) out.push(`build args changed: ${changedArgs.join(', ')}`);
  const remote = (r: string[]) => [...r].sort().join('\n');
  if (remote(before.remoteSources) !== remote(now.remoteSources)) out.push('remote ADD sources changed');
  return out;
}

function digestPart(ref: string): string {
  const at = ref.lastIndexOf('@');
  return at >= 0 ? ref.slice(at + 1) : ref;
}
