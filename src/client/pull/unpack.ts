// The unpack half of a pull: turn an image's layers into committed snapshots named by chain ID, applying
// only the layers whose chain the snapshotter lacks, bottom-up. Each layer waits only for its own blob
// and for the layer below, so unpacking runs alongside the downloads. As containerd's client does: Stat
// the chain ID, else Prepare an extract-… key on the parent (before the blob is there), wait for the
// blob, Diff.Apply it (its diff ID must come back), Commit under the chain ID; then label the blob with
// its diff ID and the config with the top chain.
import { randomBytes } from 'node:crypto';
import { dataLoss, failedPrecondition, isAlreadyExists } from '../../errors.ts';
import type { Descriptor } from '../../oci/descriptor.ts';
import { type Digest, digestLike } from '../../oci/digest.ts';
import {
  type ImageConfig,
  type ImageManifest,
  MAX_CONFIG_BYTES,
  parseImageConfig,
} from '../../oci/manifest.ts';
import { isLayerType } from '../../oci/media-types.ts';
import { tracePhase } from '../../trace.ts';
import type { DaemonApi, Labels } from '../daemon-api.ts';
import { chainIds } from './chain.ts';
import type { PullListener } from './events.ts';
import { LABEL_UNCOMPRESSED, snapshotGcLabel } from './labels.ts';

export interface UnpackOptions {
  snapshotter: string;
  /** Resolves with a blob's labels once the namespace holds it (default: it does already). */
  waitBlob?: (digest: Digest) => Promise<Labels>;
  signal?: AbortSignal;
  onEvent?: PullListener;
}

export interface UnpackResult {
  /** The top chain ID; undefined for an image of no layers (nothing to unpack). */
  chainId: Digest | undefined;
  applied: number;
  present: number;
}

/** Reads and validates an image config from the daemon. */
export async function readConfig(api: DaemonApi, config: Descriptor): Promise<ImageConfig> {
  const bytes = await api.readContent(config.digest, MAX_CONFIG_BYTES);
  if (digestLike(bytes, config.digest) !== config.digest)
    throw dataLoss(`config ${config.digest} reads back wrong`);
  return parseImageConfig(bytes);
}

/** The manifest's layers with their diff IDs; the counts must agree, as containerd insists. */
export function layersWithDiffIds(
  manifest: ImageManifest,
  config: ImageConfig,
): { layer: Descriptor; diffId: Digest }[] {
  const layers = manifest.layers.filter((l) => isLayerType(l.mediaType));
  const diffIds = config.rootfs.diff_ids;
  if (layers.length !== diffIds.length) {
    throw failedPrecondition(
      `mismatched image rootfs and manifest layers: ${diffIds.length} diff_ids, ${layers.length} layers`,
    );
  }
  return layers.map((layer, i) => ({ layer, diffId: diffIds[i]! }));
}

/** containerd's unique key part: the clock's nanoseconds and three random bytes. */
function uniquePart(): string {
  return `${process.hrtime.bigint() % 1_000_000_000n}-${randomBytes(3).toString('base64url')}`;
}

export async function unpackImage(
  api: DaemonApi,
  manifest: ImageManifest,
  opts: UnpackOptions,
): Promise<UnpackResult> {
  const sn = opts.snapshotter;
  const waitBlob = opts.waitBlob ?? (async (): Promise<Labels> => ({}));
  const emit: PullListener = opts.onEvent ?? (() => {});
  await waitBlob(manifest.config.digest);
  const config = await readConfig(api, manifest.config);
  const layers = layersWithDiffIds(manifest, config);
  const chain = chainIds(layers.map((l) => l.diffId));
  const result: UnpackResult = { chainId: chain.at(-1), applied: 0, present: 0 };

  // Blob labels go out while the next layer unpacks (a round trip per layer off the critical path);
  // all must have landed before the config is labelled with the chain.
  const labelling: Promise<void>[] = [];
  for (const [i, { layer, diffId }] of layers.entries()) {
    opts.signal?.throwIfAborted();
    const chainId = chain[i]!;
    const parent = i === 0 ? '' : chain[i - 1]!;
    // As containerd's unpacker: the scratch snapshot (a copy of the parent) is prepared while the blob
    // may still be downloading, so the copy is off the critical path whenever the unpack is ahead.
    const scratch =
      (await api.statSnapshot(sn, chainId)) === undefined
        ? await prepareScratch(api, sn, chainId, parent)
        : undefined;
    let labels: Labels;
    try {
      const endWait = tracePhase(`unpack-wait ${i}`);
      labels = await waitBlob(layer.digest);
      endWait();
    } catch (err) {
      if (scratch) await api.removeSnapshot(sn, scratch.key).catch(() => {});
      throw err;
    }
    const started = performance.now();
    emit({ type: 'unpack-start', layer, chainId });
    const applied = scratch !== undefined;
    if (scratch) await applyLayer(api, sn, scratch, layer, diffId, chainId, opts.signal);
    if (applied) result.applied++;
    else result.present++;
    if (labels[LABEL_UNCOMPRESSED] !== diffId) {
      const update = api.updateContentLabels(layer.digest, { [LABEL_UNCOMPRESSED]: diffId });
      update.catch(() => {}); // awaited below; a failure meanwhile must not go unhandled
      labelling.push(update);
    }
    emit({ type: 'unpack-done', layer, chainId, applied, ms: performance.now() - started });
  }
  await Promise.all(labelling);
  // An image of no layers (FROM scratch and metadata) has no snapshot: ctr's unpack sets the label
  // empty then, which removes it, and succeeds.
  await api.updateContentLabels(manifest.config.digest, { [snapshotGcLabel(sn)]: result.chainId ?? '' });
  return result;
}

interface Scratch {
  key: string;
  mounts: Awaited<ReturnType<DaemonApi['prepareSnapshot']>>;
}

/** Prepares an `extract-…` snapshot on `parent` under a fresh unique key. */
async function prepareScratch(api: DaemonApi, sn: string, chainId: Digest, parent: string): Promise<Scratch> {
  for (;;) {
    const key = `extract-${uniquePart()} ${chainId}`;
    const endPrepare = tracePhase(`prepare ${chainId.slice(7, 19)}`);
    try {
      const mounts = await api.prepareSnapshot(sn, key, parent);
      endPrepare();
      return { key, mounts };
    } catch (err) {
      // The key is taken (a clash of unique parts): try another.
      if (!isAlreadyExists(err)) throw err;
    }
  }
}

/** Applies the layer into the scratch snapshot and commits it as `chainId`; removes it on failure. */
async function applyLayer(
  api: DaemonApi,
  sn: string,
  scratch: Scratch,
  layer: Descriptor,
  diffId: Digest,
  chainId: Digest,
  signal: AbortSignal | undefined,
): Promise<void> {
  const { key, mounts } = scratch;
  try {
    const endApply = tracePhase(`apply ${layer.digest.slice(7, 19)}`);
    const applied = await api.applyDiff(layer, mounts, signal);
    endApply();
    if (applied.digest !== diffId) {
      throw failedPrecondition(
        `wrong diff id calculated on extraction of ${layer.digest}: ${applied.digest}, expected ${diffId}`,
      );
    }
    const endCommit = tracePhase(`commit-snapshot ${chainId.slice(7, 19)}`);
    try {
      await api.commitSnapshot(sn, chainId, key);
      endCommit();
    } catch (err) {
      // Another pull committed the same chain meanwhile: theirs is as good as ours.
      if (!isAlreadyExists(err)) throw err;
      await api.removeSnapshot(sn, key).catch(() => {});
    }
  } catch (err) {
    // The failure that matters is the one being thrown; a failed cleanup only leaves a key for GC.
    await api.removeSnapshot(sn, key).catch(() => {});
    throw err;
  }
}
