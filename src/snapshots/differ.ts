// The diff service's domain side over the daemon's snapshotters and a namespace's content: Apply streams
// a layer blob from the content store through the safe applier into an active snapshot's directory and
// returns the applied (uncompressed) descriptor; Compare writes the difference of two snapshot trees into
// the content store as a new layer. Mounts must be ones this daemon's snapshotters handed out.
import { randomBytes } from 'node:crypto';
import { Transform } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { failedPrecondition, invalidArgument, isAlreadyExists, unimplemented } from '../errors.ts';
import type { Blob } from '../oci/blob.ts';
import { type Digest, Digester } from '../oci/digest.ts';
import { type Compression, layerCompression, MediaType } from '../oci/media-types.ts';
import { tracePhase } from '../trace.ts';
import { applyLayer } from './apply/apply-layer.ts';
import type { SkipKind } from './apply/apply-options.ts';
import { ApplyWorkers } from './apply/apply-workers.ts';
import { compressStream } from './compression.ts';
import { canMakeDevices } from './devices.ts';
import { diffDirectories } from './diff/diff-directories.ts';
import { withTree } from './mount.ts';
import type { Mount, SnapshotDirs, Snapshotter } from './snapshotter.ts';

/** Label (content) and annotation (descriptor) naming a layer's uncompressed digest. */
export const LABEL_UNCOMPRESSED = 'containerd.io/uncompressed';

export interface LayerDescriptor {
  mediaType: string;
  digest: string;
  size: number;
  annotations?: Record<string, string>;
}

/** A namespace's ingest, as the content view provides it. */
export interface LayerWriter {
  write(data: Uint8Array): Promise<void>;
  digest(): Digest;
  commit(size: number, expected: string, labels?: Record<string, string>): Promise<Digest>;
  abort(): Promise<void>;
  close(): Promise<void>;
}

/** What the differ needs from namespaced content (the daemon's ContentView has it). */
export interface DiffContent {
  info(ns: string, digest: string): { size: number; labels: Record<string, string> };
  update(
    ns: string,
    info: { digest: string; labels?: Record<string, string> },
    paths: readonly string[],
  ): unknown;
  writer(ns: string, ref: string, opts: { lease?: string }): Promise<LayerWriter>;
  /** The namespace's blob (NotFound when it does not hold it). */
  blob(ns: string, digest: string): Blob;
}

export interface DifferOptions {
  /** Every snapshotter whose mounts Apply and Compare accept. */
  snapshotters: Iterable<Snapshotter>;
  content: DiffContent;
  /** Told about entries the applier could not reproduce (devices, xattrs), for logging. */
  onSkip?: (kind: SkipKind, name: string) => void;
}

export interface CompareRequest {
  lower: readonly Mount[];
  upper: readonly Mount[];
  /** Layer media type; '' means tar+gzip, as containerd's walking differ. */
  mediaType: string;
  /** Ingest ref; '' picks a unique one (and an unfinished ingest is then aborted). */
  ref: string;
  labels: Record<string, string>;
  lease?: string;
  signal?: AbortSignal;
}

const COMPARE_MEDIA_TYPES = new Map<string, Compression>([
  [MediaType.ociLayer, 'none'],
  [MediaType.ociLayerGzip, 'gzip'],
  [MediaType.ociLayerZstd, 'zstd'],
]);

function uniqueRef(): string {
  return `${process.hrtime.bigint()}-${randomBytes(3).toString('base64url')}`;
}

export class Differ {
  private readonly snapshotters: Snapshotter[];
  private readonly content: DiffContent;
  private readonly onSkip: DifferOptions['onSkip'];
  /** Layers are applied on worker threads, one started now so the first apply need not wait for it. */
  private readonly workers = new ApplyWorkers();
  // As containerd: devices are made when running as root outside a user namespace.
  private readonly allowDevices = canMakeDevices();

  constructor(opts: DifferOptions) {
    this.snapshotters = [...opts.snapshotters];
    this.content = opts.content;
    this.onSkip = opts.onSkip;
    this.workers.warm();
  }

  /** Stops the apply workers; applies under way fail. */
  close(): Promise<void> {
    return this.workers.close();
  }

  /** The directories behind a mount one of the snapshotters handed out to namespace `ns`. */
  private resolve(ns: string, m: Mount, writable: boolean): SnapshotDirs {
    for (const sn of this.snapshotters) {
      const dirs = sn.resolveMount(ns, m, { writable });
      if (dirs) return dirs;
    }
    throw invalidArgument(
      `mount ${m.type} ${JSON.stringify(m.source)} is no snapshot of this daemon: invalid argument`,
    );
  }

  /**
   * Applies layer `desc` (from the namespace's content) onto the one writable mount and returns
   * `{mediaType: ociLayer, digest: diff_id, size}`. When the descriptor carries the expected diff_id
   * (annotation `containerd.io/uncompressed`) and the layer disagrees: FailedPrecondition.
   */
  async apply(
    ns: string,
    desc: LayerDescriptor,
    mounts: readonly Mount[],
    signal?: AbortSignal,
  ): Promise<LayerDescriptor> {
    if (mounts.length !== 1) {
      throw invalidArgument(`apply needs exactly one mount, got ${mounts.length}: invalid argument`);
    }
    const compression = layerCompression(desc.mediaType);
    if (compression === undefined) {
      throw unimplemented(`no processor for media-type ${JSON.stringify(desc.mediaType)}: not implemented`);
    }
    const dirs = this.resolve(ns, mounts[0]!, true);
    const root = dirs.upper;
    if (root === undefined) throw invalidArgument('apply needs a writable mount: invalid argument');
    const overlay =
      dirs.lowers.length > 0 && dirs.whiteout ? { lowers: dirs.lowers, whiteout: dirs.whiteout } : undefined;
    if (dirs.lowers.length > 0 && !overlay) {
      throw invalidArgument('apply needs a mount with one writable directory: invalid argument');
    }
    this.content.info(ns, desc.digest); // NotFound before any work
    // The store's reads are files, which the applier decodes with reused buffers.
    const layer = await this.content.blob(ns, desc.digest).open();
    // Docker's plain tar type is used for compressed blobs in the wild; containerd sniffs those.
    const how = desc.mediaType === MediaType.dockerLayer ? 'auto' : compression;
    const endApply = tracePhase(`daemon-apply ${desc.digest.slice(7, 19)}`);
    let applied: Awaited<ReturnType<typeof applyLayer>>;
    try {
      applied = await applyLayer(root, layer, {
        compression: how,
        workers: this.workers,
        allowDevices: this.allowDevices,
        ...(signal ? { signal } : {}),
        ...(this.onSkip ? { onSkip: this.onSkip } : {}),
        ...(overlay ? { overlay } : {}),
      });
    } finally {
      layer.destroy();
    }
    endApply(`${applied.size} bytes ${applied.entries} entries`);
    const expected = desc.annotations?.[LABEL_UNCOMPRESSED];
    if (expected !== undefined && expected !== applied.diffId) {
      throw failedPrecondition(
        `layer ${desc.digest} unpacked to ${applied.diffId}, expected ${expected}: failed precondition`,
      );
    }
    return { mediaType: MediaType.ociLayer, digest: applied.diffId, size: applied.size };
  }

  /** Writes the changes from `lower` (none: everything) to `upper` into the content store as a layer. */
  async compare(ns: string, req: CompareRequest): Promise<LayerDescriptor> {
    const mediaType = req.mediaType === '' ? MediaType.ociLayerGzip : req.mediaType;
    const compression = COMPARE_MEDIA_TYPES.get(mediaType);
    if (compression === undefined) {
      throw unimplemented(`unsupported diff media type: ${mediaType}: not implemented`);
    }
    if (req.lower.length > 1 || req.upper.length !== 1) {
      throw invalidArgument(
        `diff needs at most one lower and exactly one upper mount, got ${req.lower.length} and ${req.upper.length}: invalid argument`,
      );
    }
    const lowerDirs = req.lower[0] ? this.resolve(ns, req.lower[0], false) : undefined;
    const upperDirs = this.resolve(ns, req.upper[0]!, false);
    if (!lowerDirs)
      return withTree(upperDirs, (upper) => this.write(ns, req, mediaType, compression, undefined, upper));
    return withTree(lowerDirs, (lower) =>
      withTree(upperDirs, (upper) => this.write(ns, req, mediaType, compression, lower, upper)),
    );
  }

  /** Writes the difference of two directories into the content store as a layer. */
  private async write(
    ns: string,
    req: CompareRequest,
    mediaType: string,
    compression: Compression,
    lower: string | undefined,
    upper: string,
  ): Promise<LayerDescriptor> {
    const ownRef = req.ref === '';
    const ref = ownRef ? uniqueRef() : req.ref;
    const w = await this.content.writer(ns, ref, req.lease ? { lease: req.lease } : {});
    let committed = false;
    try {
      const raw = new Digester();
      const hashing = new Transform({
        transform(chunk: Buffer, _enc, cb) {
          raw.update(chunk);
          cb(null, chunk);
        },
      });
      await pipeline(
        diffDirectories(lower, upper, req.signal ? { signal: req.signal } : {}),
        hashing,
        compressStream(compression),
        async (encoded: AsyncIterable<Buffer>) => {
          for await (const chunk of encoded) await w.write(chunk);
        },
        req.signal ? { signal: req.signal } : {},
      );
      const labels = { ...req.labels };
      if (compression !== 'none') labels[LABEL_UNCOMPRESSED] = raw.digest();
      let digest: Digest;
      try {
        digest = await w.commit(0, '', labels);
      } catch (err) {
        if (!isAlreadyExists(err)) throw err;
        digest = w.digest();
      }
      committed = true;
      const info = this.content.info(ns, digest);
      if (compression !== 'none' && info.labels[LABEL_UNCOMPRESSED] === undefined) {
        this.content.update(ns, { digest, labels: { [LABEL_UNCOMPRESSED]: raw.digest() } }, [
          `labels.${LABEL_UNCOMPRESSED}`,
        ]);
      }
      return { mediaType, digest, size: info.size };
    } finally {
      if (!committed && ownRef) await w.abort().catch(() => {});
      await w.close().catch(() => {});
    }
  }
}
