// The DaemonApi of the pull and image commands over the daemon's containerd gRPC services (any daemon
// speaking them: Strata's or containerd itself). Every call carries the namespace, and the lease when
// one is set; gRPC failures come back as StrataErrors. Content writes are pipelined: up to WRITE_WINDOW
// messages in flight, each response checked in order, so a round trip per MiB does not bound throughput.
import { resolve } from 'node:path';
import type { Client } from '@grpc/grpc-js';
import { descriptorFromProto, descriptorToProto } from '../api/convert/descriptor.ts';
import { dateOf } from '../api/convert/timestamps.ts';
import {
  Content,
  WriteAction,
  type WriteContentResponse,
} from '../api/gen/containerd/services/content/v1/content_pb.ts';
import { Diff } from '../api/gen/containerd/services/diff/v1/diff_pb.ts';
import { type Image, Images } from '../api/gen/containerd/services/images/v1/images_pb.ts';
import { Leases } from '../api/gen/containerd/services/leases/v1/leases_pb.ts';
import { Namespaces } from '../api/gen/containerd/services/namespaces/v1/namespace_pb.ts';
import { Kind, Snapshots } from '../api/gen/containerd/services/snapshots/v1/snapshots_pb.ts';
import type { Descriptor as ProtoDescriptor } from '../api/gen/containerd/types/descriptor_pb.ts';
import { callServerStream, callUnary, createClient, metadataWith } from '../api/grpc/client.ts';
import { errorFromStatus } from '../api/grpc/status.ts';
import { WriteChannel, type WriteStream } from '../api/transport/write-channel.ts';
import {
  dataLoss,
  isAlreadyExists,
  isNotFound,
  isUnavailable,
  messageOf,
  resourceExhausted,
} from '../errors.ts';
import type { Descriptor } from '../oci/descriptor.ts';
import { type Digest, parseDigest } from '../oci/digest.ts';
import { sleep } from '../registry/retry.ts';
import type {
  BlobInfo,
  DaemonApi,
  DaemonImage,
  DaemonMount,
  DaemonSnapshotKind,
  IngestWriter,
  Labels,
  SnapshotInfo,
} from './daemon-api.ts';

/** Write messages in flight before the writer waits for a response. */
export const WRITE_WINDOW = 8;
/** Diff.Apply of a big layer takes a while; other unary calls get the client's default deadline. */
const APPLY_TIMEOUT_MS = 30 * 60_000;
/** A busy daemon (not a held ref lock, which is waited for) is retried with doubling delays, this often. */
const OPEN_RETRIES = 12;
/** How containerd words a ref another writer holds (`ref … locked for …`). */
const LOCKED = /\blocked\b/;

export const DEFAULT_NAMESPACE = 'default';

/** `unix:///path`, `unix:/path` or a bare path → the grpc-js target. */
export function grpcTarget(address: string): string {
  return `unix://${socketPath(address)}`;
}

/**
 * `unix:///path`, `unix:/path` or a bare path → the absolute path. A relative one is taken from the
 * working directory, as the daemon takes its `--address`; grpc-js would read `unix://strata.sock` as a
 * host name and connect to `/strata.sock`.
 */
export function socketPath(address: string): string {
  if (address.startsWith('unix://')) return resolve(address.slice(7));
  if (address.startsWith('unix:')) return resolve(address.slice(5));
  return resolve(address);
}

function fromProtoDescriptor(d: ProtoDescriptor | undefined, what: string): Descriptor {
  if (!d) throw dataLoss(`${what}: the daemon sent no descriptor`);
  const fields = descriptorFromProto(d);
  return { ...fields, digest: parseDigest(fields.digest) };
}

function fromProtoImage(img: Image | undefined, what: string): DaemonImage {
  if (!img) throw dataLoss(`${what}: the daemon sent no image`);
  const out: DaemonImage = {
    name: img.name,
    target: fromProtoDescriptor(img.target, what),
    labels: { ...img.labels },
  };
  const created = dateOf(img.createdAt);
  const updated = dateOf(img.updatedAt);
  if (created) out.createdAt = created;
  if (updated) out.updatedAt = updated;
  return out;
}

const KINDS: Record<number, DaemonSnapshotKind> = {
  [Kind.VIEW]: 'view',
  [Kind.ACTIVE]: 'active',
  [Kind.COMMITTED]: 'committed',
};

const toMounts = (
  ms: readonly { type: string; source: string; target: string; options: string[] }[],
): DaemonMount[] =>
  ms.map((m) => ({ type: m.type, source: m.source, target: m.target, options: [...m.options] }));

export class GrpcDaemonApi implements DaemonApi {
  private readonly client: Client;
  /** Content.Write calls, which carry the bulk of a pull, bypass grpc-js (see write-channel.ts). */
  private readonly writes: WriteChannel;
  readonly namespace: string;
  readonly lease: string | undefined;

  constructor(client: Client, writes: WriteChannel, namespace: string, lease?: string) {
    this.client = client;
    this.writes = writes;
    this.namespace = namespace;
    this.lease = lease;
  }

  /** A client on the daemon's socket; close it with close(). */
  static connect(address: string, namespace = DEFAULT_NAMESPACE): GrpcDaemonApi {
    return new GrpcDaemonApi(
      createClient(grpcTarget(address)),
      new WriteChannel(socketPath(address)),
      namespace,
    );
  }

  close(): void {
    this.client.close();
    this.writes.close();
  }

  private get headers(): Record<string, string> {
    return {
      'containerd-namespace': this.namespace,
      ...(this.lease ? { 'containerd-lease': this.lease } : {}),
    };
  }

  private get md() {
    return metadataWith(this.headers);
  }

  /** Runs a call, turning a gRPC failure into our taxonomy with `what` in front. */
  private async call<T>(what: string, run: () => Promise<T>): Promise<T> {
    try {
      return await run();
    } catch (err) {
      throw errorFromStatus(err, what);
    }
  }

  withLease(id: string): GrpcDaemonApi {
    return new GrpcDaemonApi(this.client, this.writes, this.namespace, id);
  }

  createLease(labels: Labels, id = ''): Promise<string> {
    return this.call('create lease', async () => {
      const res = await callUnary(this.client, Leases.method.create, { id, labels }, { metadata: this.md });
      if (!res.lease) throw dataLoss('create lease: the daemon sent no lease');
      return res.lease.id;
    });
  }

  deleteLease(id: string): Promise<void> {
    return this.call(`delete lease ${id}`, async () => {
      await callUnary(this.client, Leases.method.delete, { id, sync: false }, { metadata: this.md });
    });
  }

  async contentInfo(digest: Digest): Promise<BlobInfo | undefined> {
    try {
      const res = await this.call(`content ${digest}`, () =>
        callUnary(this.client, Content.method.info, { digest }, { metadata: this.md }),
      );
      const info = res.info;
      if (!info) throw dataLoss(`content ${digest}: the daemon sent no info`);
      const out: BlobInfo = { digest, size: Number(info.size), labels: { ...info.labels } };
      const created = dateOf(info.createdAt);
      const updated = dateOf(info.updatedAt);
      if (created) out.createdAt = created;
      if (updated) out.updatedAt = updated;
      return out;
    } catch (err) {
      if (isNotFound(err)) return undefined;
      throw err;
    }
  }

  readContent(digest: Digest, maxBytes: number): Promise<Buffer> {
    return this.call(`read content ${digest}`, async () => {
      const chunks: Buffer[] = [];
      let total = 0;
      const stream = callServerStream(
        this.client,
        Content.method.read,
        { digest, offset: 0n, size: 0n },
        { metadata: this.md, timeoutMs: 60_000 },
      );
      for await (const msg of stream) {
        total += msg.data.byteLength;
        if (total > maxBytes) throw resourceExhausted(`content ${digest} is larger than ${maxBytes} bytes`);
        chunks.push(Buffer.from(msg.data.buffer, msg.data.byteOffset, msg.data.byteLength));
      }
      return Buffer.concat(chunks, total);
    });
  }

  async leaseContent(digest: Digest): Promise<void> {
    const lease = this.lease;
    if (lease === undefined) return;
    await this.call(`lease content ${digest}`, async () => {
      await callUnary(
        this.client,
        Leases.method.addResource,
        { id: lease, resource: { id: digest, type: 'content' } },
        { metadata: this.md },
      );
    });
  }

  updateContentLabels(digest: Digest, labels: Labels): Promise<void> {
    const keys = Object.keys(labels);
    if (keys.length === 0) return Promise.resolve();
    // An empty value is sent as an absent one: a masked label that is absent gets removed.
    const set = Object.fromEntries(Object.entries(labels).filter(([, v]) => v !== ''));
    return this.call(`label content ${digest}`, async () => {
      await callUnary(
        this.client,
        Content.method.update,
        { info: { digest, labels: set }, updateMask: { paths: keys.map((k) => `labels.${k}`) } },
        { metadata: this.md },
      );
    });
  }

  async openWriter(
    ref: string,
    expected: { digest: Digest; size: number },
    signal?: AbortSignal,
  ): Promise<IngestWriter | undefined> {
    for (let attempt = 0; ; attempt++) {
      signal?.throwIfAborted();
      try {
        return await GrpcContentWriter.open(() => this.writes.open(this.headers), ref, expected);
      } catch (err) {
        if (isAlreadyExists(err)) return undefined;
        if (!isUnavailable(err)) throw err;
        // Another writer of this blob (a concurrent pull of the same image) may take as long as its
        // download does: wait for it, as containerd's client does; it commits or lets go of the ingest.
        if (attempt >= OPEN_RETRIES && !LOCKED.test(messageOf(err))) throw err;
        const delay = Math.min(2048, 16 << Math.min(attempt, 7)) * (0.5 + Math.random() / 2);
        // An abort ends the wait with the signal's own reason, as the check at the loop's head does.
        await sleep(delay, signal).catch(() => signal?.throwIfAborted());
      }
    }
  }

  abortIngest(ref: string): Promise<void> {
    return this.call(`abort ingest ${ref}`, async () => {
      await callUnary(this.client, Content.method.abort, { ref }, { metadata: this.md });
    });
  }

  deleteContent(digest: Digest): Promise<void> {
    return this.call(`delete content ${digest}`, async () => {
      await callUnary(this.client, Content.method.delete, { digest }, { metadata: this.md });
    });
  }

  async getImage(name: string): Promise<DaemonImage | undefined> {
    try {
      const res = await this.call(`image ${name}`, () =>
        callUnary(this.client, Images.method.get, { name }, { metadata: this.md }),
      );
      return fromProtoImage(res.image, `image ${name}`);
    } catch (err) {
      if (isNotFound(err)) return undefined;
      throw err;
    }
  }

  listImages(filters: readonly string[]): Promise<DaemonImage[]> {
    return this.call('list images', async () => {
      const res = await callUnary(
        this.client,
        Images.method.list,
        { filters: [...filters] },
        { metadata: this.md },
      );
      return res.images.map((i) => fromProtoImage(i, `image ${i.name}`));
    });
  }

  createImage(image: DaemonImage): Promise<DaemonImage> {
    return this.call(`create image ${image.name}`, async () => {
      const res = await callUnary(
        this.client,
        Images.method.create,
        { image: { name: image.name, labels: image.labels, target: descriptorToProto(image.target) } },
        { metadata: this.md },
      );
      return fromProtoImage(res.image, `create image ${image.name}`);
    });
  }

  updateImage(image: DaemonImage, paths?: readonly string[]): Promise<DaemonImage> {
    return this.call(`update image ${image.name}`, async () => {
      const res = await callUnary(
        this.client,
        Images.method.update,
        {
          image: { name: image.name, labels: image.labels, target: descriptorToProto(image.target) },
          ...(paths ? { updateMask: { paths: [...paths] } } : {}),
        },
        { metadata: this.md },
      );
      return fromProtoImage(res.image, `update image ${image.name}`);
    });
  }

  deleteImage(name: string, sync: boolean): Promise<void> {
    return this.call(`delete image ${name}`, async () => {
      await callUnary(this.client, Images.method.delete, { name, sync }, { metadata: this.md });
    });
  }

  namespaceLabels(): Promise<Labels> {
    return this.call(`namespace ${this.namespace}`, async () => {
      const res = await callUnary(
        this.client,
        Namespaces.method.get,
        { name: this.namespace },
        { metadata: this.md },
      );
      return { ...(res.namespace?.labels ?? {}) };
    });
  }

  async statSnapshot(snapshotter: string, key: string): Promise<SnapshotInfo | undefined> {
    try {
      const res = await this.call(`stat snapshot ${key}`, () =>
        callUnary(this.client, Snapshots.method.stat, { snapshotter, key }, { metadata: this.md }),
      );
      const info = res.info;
      if (!info) throw dataLoss(`stat snapshot ${key}: the daemon sent no info`);
      return {
        name: info.name,
        parent: info.parent,
        kind: KINDS[info.kind] ?? 'unknown',
        labels: { ...info.labels },
      };
    } catch (err) {
      if (isNotFound(err)) return undefined;
      throw err;
    }
  }

  prepareSnapshot(
    snapshotter: string,
    key: string,
    parent: string,
    labels: Labels = {},
  ): Promise<DaemonMount[]> {
    return this.call(`prepare snapshot ${key}`, async () => {
      const res = await callUnary(
        this.client,
        Snapshots.method.prepare,
        { snapshotter, key, parent, labels },
        { metadata: this.md },
      );
      return toMounts(res.mounts);
    });
  }

  viewSnapshot(
    snapshotter: string,
    key: string,
    parent: string,
    labels: Labels = {},
  ): Promise<DaemonMount[]> {
    return this.call(`view snapshot ${parent}`, async () => {
      const res = await callUnary(
        this.client,
        Snapshots.method.view,
        { snapshotter, key, parent, labels },
        { metadata: this.md },
      );
      return toMounts(res.mounts);
    });
  }

  commitSnapshot(snapshotter: string, name: string, key: string, labels: Labels = {}): Promise<void> {
    return this.call(`commit snapshot ${name}`, async () => {
      await callUnary(
        this.client,
        Snapshots.method.commit,
        { snapshotter, name, key, labels },
        { metadata: this.md },
      );
    });
  }

  removeSnapshot(snapshotter: string, key: string): Promise<void> {
    return this.call(`remove snapshot ${key}`, async () => {
      await callUnary(this.client, Snapshots.method.remove, { snapshotter, key }, { metadata: this.md });
    });
  }

  applyDiff(layer: Descriptor, mounts: readonly DaemonMount[], signal?: AbortSignal): Promise<Descriptor> {
    return this.call(`apply layer ${layer.digest}`, async () => {
      const res = await callUnary(
        this.client,
        Diff.method.apply,
        {
          diff: descriptorToProto(layer),
          mounts: mounts.map((m) => ({
            type: m.type,
            source: m.source,
            target: m.target ?? '',
            options: m.options,
          })),
        },
        { metadata: this.md, timeoutMs: APPLY_TIMEOUT_MS, ...(signal ? { signal } : {}) },
      );
      return fromProtoDescriptor(res.applied, `apply layer ${layer.digest}`);
    });
  }
}

/** One Content.Write stream: STAT on open, pipelined WRITEs, COMMIT with size and digest checks. */
class GrpcContentWriter implements IngestWriter {
  private readonly call: WriteStream;
  private readonly ref: string;
  private readonly expected: { digest: Digest; size: number };
  /** Offsets the responses to the messages in flight must report, oldest first. */
  private readonly inflight: number[] = [];
  private sent: number;
  private closed = false;

  private constructor(
    call: WriteStream,
    ref: string,
    expected: { digest: Digest; size: number },
    offset: number,
  ) {
    this.call = call;
    this.ref = ref;
    this.expected = expected;
    this.sent = offset;
  }

  get offset(): number {
    return this.sent;
  }

  static async open(
    start: () => WriteStream,
    ref: string,
    expected: { digest: Digest; size: number },
  ): Promise<GrpcContentWriter> {
    let call: WriteStream | undefined;
    try {
      call = start();
      await call.send({
        action: WriteAction.STAT,
        ref,
        total: BigInt(expected.size),
        expected: expected.digest,
      });
      const first = await call.responses.next();
      if (first.done) throw dataLoss(`write ${ref}: the daemon ended the stream at once`);
      return new GrpcContentWriter(call, ref, expected, Number(first.value.offset));
    } catch (err) {
      call?.cancel();
      throw errorFromStatus(err, `write ${ref}`);
    }
  }

  private async next(): Promise<WriteContentResponse> {
    const r = await this.call.responses.next();
    if (r.done) throw dataLoss(`write ${this.ref}: the daemon ended the stream early`);
    return r.value;
  }

  /** Reads the oldest outstanding response and checks its offset. */
  private async settleOne(): Promise<void> {
    const want = this.inflight.shift()!;
    const res = await this.next();
    if (Number(res.offset) !== want) {
      throw dataLoss(`write ${this.ref}: daemon is at offset ${res.offset}, expected ${want}`);
    }
  }

  async write(data: Uint8Array | readonly Uint8Array[]): Promise<void> {
    const parts = data instanceof Uint8Array ? [data] : data;
    try {
      const at = this.sent;
      this.sent += parts.reduce((n, d) => n + d.byteLength, 0);
      this.inflight.push(this.sent);
      await this.call.send({ action: WriteAction.WRITE, offset: BigInt(at), data: parts });
      while (this.inflight.length >= WRITE_WINDOW) await this.settleOne();
    } catch (err) {
      throw errorFromStatus(err, `write ${this.ref}`);
    }
  }

  async flush(): Promise<void> {
    try {
      while (this.inflight.length > 0) await this.settleOne();
    } catch (err) {
      throw errorFromStatus(err, `write ${this.ref}`);
    }
  }

  async truncate(): Promise<void> {
    // A write at offset 0 makes the daemon start the ingest again.
    await this.flush();
    this.sent = 0;
  }

  async commit(labels: Labels = {}): Promise<'committed' | 'exists'> {
    try {
      await this.call.send({
        action: WriteAction.COMMIT,
        offset: BigInt(this.sent),
        total: BigInt(this.expected.size),
        expected: this.expected.digest,
        labels,
      });
      while (this.inflight.length > 0) await this.settleOne();
      const res = await this.next();
      if (Number(res.offset) !== this.expected.size) {
        throw dataLoss(`commit ${this.ref}: daemon has ${res.offset} bytes, expected ${this.expected.size}`);
      }
      if (res.digest !== this.expected.digest) {
        throw dataLoss(`commit ${this.ref}: daemon has ${res.digest}, expected ${this.expected.digest}`);
      }
      return 'committed';
    } catch (err) {
      const mapped = errorFromStatus(err, `commit ${this.ref}`);
      if (isAlreadyExists(mapped)) return 'exists';
      throw mapped;
    } finally {
      this.close();
    }
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    this.call.end();
    this.call.cancel();
  }
}
