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
  /** Context files read: [path, `mode id`], see FileIds. */
  files: FileIds;
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

/**
 * A build's files as [path, `mode id`] pairs, in `byName` order, each path once. A list rather than an
 * object: a large context's files can then be gone through, compared and stored in slices, where listing
 * an object's names is one step (about 35 ms per 100k names).
 */
export type FileIds = readonly FileId[];
export type FileId = readonly [path: string, modeId: string];

/** UTF-16 code unit order, as JavaScript compares strings (the build key's name order). */
export const byName = (a: string, b: string) => (a < b ? -1 : a > b ? 1 : 0);

function sorted<T>(record: Record<string, T>): Array<[string, T]> {
  return Object.entries(record).sort(([a], [b]) => byName(a, b));
}

/** Names the work in the error a cancelled build raises. */
const KEYING = 'computing the build key';

/**
 * The files a build reads, from its context's entries; a path listed twice has its last entry's id.
 * Made in slices: a large context's files would otherwise hold the event loop in one step. The entries
 * come mostly sorted (a selection is, the .gitattributes added after it may not be): the ascending run
 * is kept in slices, only the few out of place are sorted in one step, and the two are merged in slices.
 */
export async function filesRecord(entries: readonly ContextEntry[], signal?: AbortSignal): Promise<FileIds> {
  const run: FileId[] = [];
  const rest: FileId[] = [];
  await inSlices(entries, signal, KEYING, (e) => {
    const last = run.at(-1);
    (last === undefined || last[0] < e.path ? run : rest).push([e.path, `${e.mode} ${e.id}`]);
  });
  if (rest.length === 0) return run;
  // Stable: of the same path in `rest`, the later entry comes later. A path in both is later in `rest`.
  rest.sort(([a], [b]) => byName(a, b));
  const out: FileId[] = [];
  const add = (pair: FileId) => {
    if (out.at(-1)?.[0] === pair[0]) out[out.length - 1] = pair;
    else out.push(pair);
  };
  let r = 0;
  await inSlices(run, signal, KEYING, (pair) => {
    for (let next = rest[r]; next !== undefined && next[0] < pair[0]; next = rest[++r]) add(next);
    add(pair);
  });
  for (const pair of rest.slice(r)) add(pair);
  return out;
}

/** A files record held as an object (the previous history format's), as FileIds; one step. */
export function fileIdsOf(record: Record<string, string>): FileIds {
  return sorted(record);
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
  await inSlices(inputs.files, signal, KEYING, ([path, id]) => {
    line('file', path, id);
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
  await inSlices(merged(before.files, now.files), signal, DESCRIBING, ([path, old, current]) => {
    if (old === undefined) added.add(path);
    else if (current === undefined) removed.add(path);
    else if (old !== current) modified.add(path);
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

/**
 * The paths of two files records in `byName` order, each once, with its id in each (undefined where it
 * is not): a merge of the two sorted lists, one path a step.
 */
function* merged(
  before: FileIds,
  now: FileIds,
): Generator<[path: string, before: string | undefined, now: string | undefined]> {
  let i = 0;
  let j = 0;
  for (let a = before[0], b = now[0]; a !== undefined || b !== undefined; a = before[i], b = now[j]) {
    if (a !== undefined && (b === undefined || a[0] < b[0])) {
      yield [a[0], a[1], undefined];
      i++;
    } else if (b !== undefined && (a === undefined || b[0] < a[0])) {
      yield [b[0], undefined, b[1]];
      j++;
    } else if (a !== undefined && b !== undefined) {
      yield [a[0], a[1], b[1]];
      i++;
      j++;
    }
  }
}

function digestPart(ref: string): string {
  const at = ref.lastIndexOf('@');
  return at >= 0 ? ref.slice(at + 1) : ref;
}
