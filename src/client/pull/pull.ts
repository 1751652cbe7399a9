// `strata pull` as domain logic: containerd's client-side pull against a daemon, so the result cannot be
// told from `ctr images pull`'s. Under a lease (expiring in 24 h, deleted at the end): resolve the name,
// fetch what the namespace lacks (bounded concurrency, resumable ingests, gc.ref and distribution source
// labels), unpack each layer as soon as it and the layers below it are present, then create or replace
// the image record. A `registered` pull takes the target from the daemon's image record instead of the
// registry and leaves the record alone: what is present is neither fetched nor unpacked again.
import {
  invalidArgument,
  isAlreadyExists,
  isNotFound,
  messageOf,
  notFound,
  unavailable,
} from '../../errors.ts';
import type { Descriptor, Platform } from '../../oci/descriptor.ts';
import type { Digest } from '../../oci/digest.ts';
import type { ImageManifest } from '../../oci/manifest.ts';
import { defaultPlatform, parsePlatform } from '../../oci/platform.ts';
import {
  formatReference,
  parseNormalizedReference,
  type Reference,
  withDefaultTag,
} from '../../oci/reference.ts';
import type { RegistryClient } from '../../registry/client.ts';
import type { DaemonApi, DaemonImage, Labels } from '../daemon-api.ts';
import type { PullListener } from './events.ts';
import { fetchImage } from './fetch.ts';
import { checkConfigPlatform } from './inspect.ts';
import { LABEL_GC_EXPIRE } from './labels.ts';
import { Presence } from './presence.ts';
import { type UnpackResult, unpackImage } from './unpack.ts';

/** containerd's default where a namespace names none. */
export const DEFAULT_SNAPSHOTTER = 'overlayfs';
export const DEFAULT_PULL_CONCURRENCY = 3;
const SNAPSHOTTER_LABEL = 'containerd.io/defaults/snapshotter';

/** The one asked for, else the namespace's default (`containerd.io/defaults/snapshotter`), else overlayfs, as ctr picks. */
export async function resolveSnapshotter(api: DaemonApi, asked: string | undefined): Promise<string> {
  if (asked) {
    // A snapshotter the daemon has not loaded is refused now (the daemon names it), not after every
    // blob was fetched; a key that is not there is no error.
    await api.statSnapshot(asked, 'strata-snapshotter-probe');
    return asked;
  }
  try {
    return (await api.namespaceLabels())[SNAPSHOTTER_LABEL] || DEFAULT_SNAPSHOTTER;
  } catch (err) {
    // A namespace not made yet (the pull makes it) has no default; a daemon that does not answer is
    // said now, not after waiting out the next call's deadline too.
    if (isNotFound(err)) return DEFAULT_SNAPSHOTTER;
    throw err;
  }
}
const LEASE_TTL_MS = 24 * 3600 * 1000;

export interface PullImageOptions {
  /** The platform to fetch and unpack (default: this host's). */
  platform?: Platform | string;
  snapshotter?: string;
  /** Blobs fetched at once (default 3). */
  concurrency?: number;
  /** Unpack into snapshots (default true). */
  unpack?: boolean;
  /** Fetch the manifests of every platform an index lists, not just `platform`'s (needs `unpack: false`). */
  allPlatforms?: boolean;
  /** Labels of the image record. */
  labels?: Labels;
  /**
   * Fetch and unpack what the daemon's image record of this name already points at (the first image
   * API's "register a name, then pull"), instead of resolving the name at the registry; the record is
   * left as it is. NotFound when the daemon has no such image.
   */
  registered?: boolean;
  signal?: AbortSignal;
  onEvent?: PullListener;
}

export interface PullImageResult {
  name: string;
  descriptor: Descriptor;
  /** Image manifests reached (one per platform kept). */
  manifests: Descriptor[];
  /** Top chain ID of each unpacked manifest, in `manifests` order (undefined for one of no layers). */
  chainIds: (Digest | undefined)[];
  fetched: number;
  present: number;
  /** Blobs the namespace lacked but the daemon's content store had: linked in, no byte transferred. */
  linked: number;
  bytes: number;
  layersApplied: number;
  layersPresent: number;
}

/** The image name for a reference as a user types it: normalised, `latest` when no tag or digest. */
export function imageName(ref: string): { name: string; ref: Reference } {
  const parsed = withDefaultTag(parseNormalizedReference(ref));
  return { name: formatReference(parsed), ref: parsed };
}

/** The record for a name as given, else as `strata pull` would have named it. */
export async function findImage(api: DaemonApi, ref: string): Promise<DaemonImage> {
  const exact = await api.getImage(ref);
  if (exact) return exact;
  let normalized: string | undefined;
  try {
    normalized = imageName(ref).name;
  } catch {
    // Not a reference: only the exact name could have matched.
  }
  const found = normalized && normalized !== ref ? await api.getImage(normalized) : undefined;
  if (!found) throw notFound(`image ${ref}: not found`);
  return found;
}

export async function pullImage(
  registry: RegistryClient,
  daemon: DaemonApi,
  reference: string,
  opts: PullImageOptions = {},
): Promise<PullImageResult> {
  const { name, ref } = imageName(reference);
  const platform =
    typeof opts.platform === 'string' ? parsePlatform(opts.platform) : (opts.platform ?? defaultPlatform());
  const snapshotter = opts.snapshotter ?? DEFAULT_SNAPSHOTTER;
  if (opts.allPlatforms && opts.unpack !== false) {
    throw invalidArgument('pulling every platform fetches only: unpack must be off');
  }
  const emit: PullListener = opts.onEvent ?? (() => {});
  const stop = new AbortController();
  const signal = opts.signal ? AbortSignal.any([opts.signal, stop.signal]) : stop.signal;

  const root = opts.registered
    ? (await findImage(daemon, reference)).target
    : await resolve(registry, ref, name, signal);
  emit({ type: 'resolved', name, descriptor: root });

  const expires = new Date(Date.now() + LEASE_TTL_MS).toISOString().replace(/\.\d+Z$/, 'Z');
  const leaseId = await daemon.createLease({ [LABEL_GC_EXPIRE]: expires });
  const api = daemon.withLease(leaseId);
  try {
    const presence = new Presence();
    const manifests: Descriptor[] = [];
    const unpacks: Promise<UnpackResult>[] = [];
    const checks: Promise<void>[] = [];
    const startUnpack = (desc: Descriptor, manifest: ImageManifest): void => {
      manifests.push(desc);
      // A manifest its index lists without a platform is the host's only if its config says so.
      const byConfig = !opts.allPlatforms && desc.digest !== root.digest && desc.platform === undefined;
      const check = byConfig
        ? presence
            .wait(manifest.config.digest)
            .then(() => checkConfigPlatform(api, manifest.config, platform, root))
        : Promise.resolve();
      if (opts.unpack === false) {
        check.catch((err: unknown) => stop.abort(err));
        checks.push(check);
        return;
      }
      const job = check.then(() =>
        unpackImage(api, manifest, {
          snapshotter,
          waitBlob: (d) => presence.wait(d),
          signal,
          onEvent: emit,
        }),
      );
      // A failed unpack stops the downloads too.
      job.catch((err: unknown) => stop.abort(err));
      unpacks.push(job);
    };
    let stats: Awaited<ReturnType<typeof fetchImage>>;
    try {
      stats = await fetchImage(registry, api, ref, root, {
        platform: opts.allPlatforms ? undefined : platform,
        concurrency: Math.max(1, opts.concurrency ?? DEFAULT_PULL_CONCURRENCY),
        signal,
        presence,
        onEvent: emit,
        onManifest: startUnpack,
      });
    } catch (err) {
      presence.fail(err);
      const settled = await Promise.allSettled([...checks, ...unpacks]);
      // When an unpack failure stopped the walk, that failure is the one to report.
      const first = settled.find((s) => s.status === 'rejected');
      if (first && stop.signal.aborted && stop.signal.reason === first.reason) throw first.reason;
      throw err;
    }
    await Promise.all(checks);
    const unpacked = await Promise.all(unpacks);
    if (!opts.registered) {
      const created = await putImage(api, { name, target: root, labels: opts.labels ?? {} });
      emit({ type: 'image', name, target: root, created });
    }
    return {
      name,
      descriptor: root,
      manifests,
      chainIds: unpacked.map((u) => u.chainId),
      fetched: stats.fetched,
      present: stats.present,
      linked: stats.linked,
      bytes: stats.bytes,
      layersApplied: unpacked.reduce((n, u) => n + u.applied, 0),
      layersPresent: unpacked.reduce((n, u) => n + u.present, 0),
    };
  } catch (err) {
    // Stopped by the caller (Ctrl-C): say so, not what the stop cut short (a fetch, an unpack).
    if (opts.signal?.aborted) throw opts.signal.reason;
    throw err;
  } finally {
    await daemon.deleteLease(leaseId).catch((err: unknown) => {
      // The lease expires by itself; failing to delete it early is not worth failing the pull for.
      process.emitWarning(`strata pull: could not delete lease ${leaseId}: ${messageOf(err)}`);
    });
  }
}

async function resolve(
  registry: RegistryClient,
  ref: Reference,
  name: string,
  signal: AbortSignal,
): Promise<Descriptor> {
  try {
    return await registry.resolve(ref, { signal });
  } catch (err) {
    // What ctr says, rather than the bare HTTP status.
    if (isNotFound(err)) throw notFound(`${name}: not found`, { cause: err });
    throw err;
  }
}

/** Create, or on AlreadyExists replace the whole record (as ctr does); true when created. */
async function putImage(api: DaemonApi, image: DaemonImage): Promise<boolean> {
  for (let attempt = 0; attempt < 5; attempt++) {
    try {
      await api.createImage(image);
      return true;
    } catch (err) {
      if (!isAlreadyExists(err)) throw err;
    }
    try {
      await api.updateImage(image);
      return false;
    } catch (err) {
      // Deleted between our create and update: create again.
      if (!isNotFound(err)) throw err;
    }
  }
  throw unavailable(`image ${image.name} kept changing while it was being written`);
}
