// A walk over a descriptor graph (index → manifests → config and layers) with small handlers, as
// containerd's images.Dispatch: a handler does something with one descriptor and says which descriptors to
// visit next (see handlers.ts and fetch.ts for the pull's). Each digest is visited once; at most `concurrency` handlers run
// at a time; the first failure stops the walk (the others are aborted and awaited before it rejects).
import { aborted, notFound } from '../errors.ts';
import type { Descriptor, Platform } from './descriptor.ts';
import type { ParsedManifest } from './manifest.ts';
import { isIndexType, isManifestType } from './media-types.ts';
import { bestPlatformMatch } from './platform.ts';

export interface WalkContext {
  /** Fires when the walk is abandoned (caller's abort or another handler's failure). */
  signal: AbortSignal;
}

/** Handles one descriptor; resolves to the descriptors to visit next. */
export type Handler = (desc: Descriptor, ctx: WalkContext) => Promise<readonly Descriptor[]>;

export interface WalkOptions {
  /** Handlers running at once (default 4). */
  concurrency?: number;
  signal?: AbortSignal;
}

export function walk(
  roots: readonly Descriptor[],
  handler: Handler,
  options: WalkOptions = {},
): Promise<void> {
  const concurrency = Math.max(1, options.concurrency ?? 4);
  const stop = new AbortController();
  const signal = options.signal ? AbortSignal.any([options.signal, stop.signal]) : stop.signal;
  const ctx: WalkContext = { signal };
  const seen = new Set<string>();
  const queue: Descriptor[] = [];
  const enqueue = (ds: readonly Descriptor[]): void => {
    for (const d of ds) {
      if (seen.has(d.digest)) continue;
      seen.add(d.digest);
      queue.push(d);
    }
  };
  enqueue(roots);
  return new Promise((resolve, reject) => {
    let active = 0;
    let failure: { err: unknown } | undefined;
    const fail = (err: unknown): void => {
      failure ??= { err };
      if (!stop.signal.aborted) stop.abort(err);
    };
    const onCallerAbort = (): void => fail(aborted('walk aborted', { cause: options.signal?.reason }));
    options.signal?.addEventListener('abort', onCallerAbort, { once: true });
    const pump = (): void => {
      while (!failure && active < concurrency && queue.length > 0) {
        const desc = queue.shift()!;
        active++;
        handler(desc, ctx).then(
          (children) => {
            active--;
            if (!failure) enqueue(children);
            pump();
          },
          (err: unknown) => {
            active--;
            fail(err);
            pump();
          },
        );
      }
      if (active === 0 && (failure || queue.length === 0)) {
        options.signal?.removeEventListener('abort', onCallerAbort);
        if (failure) reject(failure.err);
        else resolve();
      }
    };
    if (options.signal?.aborted) onCallerAbort();
    pump();
  });
}

/** Runs handlers in order on each descriptor; the children are all of theirs, in order. */
export function handlers(...hs: Handler[]): Handler {
  return async (desc, ctx) => {
    const out: Descriptor[] = [];
    for (const h of hs) out.push(...(await h(desc, ctx)));
    return out;
  };
}

/** The descriptors a manifest or index refers to: config then layers; or the index's manifests. */
export function childrenOf(parsed: ParsedManifest): Descriptor[] {
  if (parsed.kind === 'index') return [...parsed.index.manifests];
  return [parsed.manifest.config, ...parsed.manifest.layers];
}

/** Whether a descriptor is a manifest or index (whose children a walk must read). */
export function isManifestLike(desc: Descriptor): boolean {
  return isManifestType(desc.mediaType) || isIndexType(desc.mediaType);
}

/**
 * The manifests of an index to follow: every one when `platform` is undefined, else the one containerd's
 * images.Manifest takes. The candidates are the manifests and indexes whose descriptor names a platform
 * the host runs, or names none; the best-ranked platform wins, one without a platform comes last (a
 * manifest's config then decides). Only that one is followed, nested index or not; none when none fits.
 */
export function selectPlatform(
  manifests: readonly Descriptor[],
  platform: Platform | undefined,
): Descriptor[] {
  if (platform === undefined) return [...manifests];
  const candidates = manifests.filter(isManifestLike);
  const chosen = bestPlatformMatch(platform, candidates) ?? candidates.find((m) => m.platform === undefined);
  return chosen ? [chosen] : [];
}

/** containerd's error when an image has no manifest for the platform; `root` is the image's target. */
export function noPlatformMatch(root: Descriptor): Error {
  return notFound(`no match for platform in manifest ${root.digest}: not found`);
}
