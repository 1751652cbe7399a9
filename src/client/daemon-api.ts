// What the client-side pull, unpack and image commands need from an image store daemon: a small slice of
// containerd's Content, Images, Leases, Snapshots and Diff services in domain terms. GrpcDaemonApi implements
// it over gRPC (grpc-daemon-api.ts); tests may implement it over anything that behaves the same.
// Failures are StrataErrors of the usual kinds (NotFound, AlreadyExists, Unavailable, …).
import type { Descriptor } from '../oci/descriptor.ts';
import type { Digest } from '../oci/digest.ts';

export type Labels = Record<string, string>;

export interface BlobInfo {
  digest: Digest;
  size: number;
  labels: Labels;
  createdAt?: Date;
  updatedAt?: Date;
}

/** One open ingest (containerd's Content.Write stream), positioned at the bytes the daemon holds. */
export interface IngestWriter {
  /** Bytes already in the ingest: where writing continues (a resumed ingest starts past 0). */
  readonly offset: number;
  /**
   * Appends at the current offset (a list of parts is one message, so callers need not concatenate).
   * Writes may be pipelined; failures surface here or at commit.
   */
  write(data: Uint8Array | readonly Uint8Array[]): Promise<void>;
  /** Waits until the daemon has acknowledged every write so far. */
  flush(): Promise<void>;
  /** Starts again from 0, dropping what the ingest holds. */
  truncate(): Promise<void>;
  /** Commits with the size and digest given at open; 'exists' when the blob appeared meanwhile. */
  commit(labels?: Labels): Promise<'committed' | 'exists'>;
  /** Ends the stream without committing; the ingest stays for a later resume. */
  close(): void;
}

export interface DaemonImage {
  name: string;
  target: Descriptor;
  labels: Labels;
  createdAt?: Date;
  updatedAt?: Date;
}

export interface DaemonMount {
  type: string;
  source: string;
  target?: string;
  options: string[];
}

export type DaemonSnapshotKind = 'view' | 'active' | 'committed' | 'unknown';

export interface SnapshotInfo {
  name: string;
  parent: string;
  kind: DaemonSnapshotKind;
  labels: Labels;
}

export interface DaemonApi {
  /** The same API with every call carrying lease `id` (what it creates is held by the lease). */
  withLease(id: string): DaemonApi;
  /** Creates a lease (id chosen by the daemon when empty); returns its id. */
  createLease(labels: Labels, id?: string): Promise<string>;
  deleteLease(id: string): Promise<void>;

  /** The blob's info in this namespace, or undefined when it is not there. */
  contentInfo(digest: Digest): Promise<BlobInfo | undefined>;
  /** Reads a whole small blob (manifest, config); fails when it is larger than `maxBytes`. */
  readContent(digest: Digest, maxBytes: number): Promise<Buffer>;
  /**
   * Puts a blob the namespace has under this API's lease (nothing without one), so garbage collection
   * keeps it while the lease lives however its other references go; containerd's client gets the same
   * by opening a writer for it.
   */
  leaseContent(digest: Digest): Promise<void>;
  /** Sets the given labels (an empty value removes one), leaving the others. */
  updateContentLabels(digest: Digest, labels: Labels): Promise<void>;
  /**
   * Opens (or resumes) the ingest `ref` for a blob of `total` bytes with digest `expected`; undefined
   * when the namespace has the blob already. A ref another writer holds (another pull of the same blob)
   * is waited for until that writer lets go or `signal` aborts; other busy answers are retried a while.
   */
  openWriter(
    ref: string,
    expected: { digest: Digest; size: number },
    signal?: AbortSignal,
  ): Promise<IngestWriter | undefined>;
  /** Removes an ingest (NotFound when there is none). */
  abortIngest(ref: string): Promise<void>;
  /** Deletes a blob from the namespace (NotFound when it is not there). */
  deleteContent(digest: Digest): Promise<void>;

  getImage(name: string): Promise<DaemonImage | undefined>;
  listImages(filters: readonly string[]): Promise<DaemonImage[]>;
  /** AlreadyExists when the name is taken. */
  createImage(image: DaemonImage): Promise<DaemonImage>;
  /** Without `paths` the whole record is replaced; with them only those fields (`labels.k`, `target`, …). */
  updateImage(image: DaemonImage, paths?: readonly string[]): Promise<DaemonImage>;
  /** NotFound when there is no such image. */
  deleteImage(name: string, sync: boolean): Promise<void>;

  /** Labels of the namespace this API works in (for its default snapshotter). */
  namespaceLabels(): Promise<Labels>;

  statSnapshot(snapshotter: string, key: string): Promise<SnapshotInfo | undefined>;
  prepareSnapshot(snapshotter: string, key: string, parent: string, labels?: Labels): Promise<DaemonMount[]>;
  viewSnapshot(snapshotter: string, key: string, parent: string, labels?: Labels): Promise<DaemonMount[]>;
  commitSnapshot(snapshotter: string, name: string, key: string, labels?: Labels): Promise<void>;
  removeSnapshot(snapshotter: string, key: string): Promise<void>;

  /** Applies a layer blob onto the mounts; returns the uncompressed descriptor (its digest is the diff ID). */
  applyDiff(layer: Descriptor, mounts: readonly DaemonMount[], signal?: AbortSignal): Promise<Descriptor>;
}
