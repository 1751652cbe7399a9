// Test images made locally with no internet, all on a busybox-static base (its /bin/sh runs under real
// containerd). The single-layer base is built with buildah (vfs storage in a private temp root, chroot
// isolation) once per process; multi-layer images and platform indexes are assembled as an OCI layout on
// disk (streamed, so 50 MiB layers are cheap) and pushed with skopeo.
import { randomBytes } from 'node:crypto';
import { createWriteStream } from 'node:fs';
import { mkdir, readFile, rename, symlink, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { PassThrough, Transform, type TransformCallback, type Writable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { createGzip } from 'node:zlib';
import { type Pack, pack as tarPack } from 'tar-stream';
import { dataLoss } from '../../src/errors.ts';
import type { Descriptor } from '../../src/oci/descriptor.ts';
import { type Digest, Digester, digestOf, encodedOf, parseDigest } from '../../src/oci/digest.ts';
import { MediaType } from '../../src/oci/media-types.ts';
import { runCommand } from './process.ts';
import type { TestRegistry } from './registry.ts';
import { removeTempDir, tempDir } from './tmp.ts';

/** Where the builders push: a test registry, or any registry on a loopback host (no credentials). */
export type PushTarget = Pick<TestRegistry, 'host' | 'creds'>;

export interface PushedImage {
  /** `host/repo:tag`. */
  ref: string;
  /** `host/repo@digest`. */
  digestRef: string;
  /** Digest of the manifest (or index) as the registry serves it. */
  digest: Digest;
  mediaType: string;
  /** Layers in the manifest (for an index: in its first manifest). */
  layers: number;
  /** Size in bytes of the manifest (or index); with digest and mediaType, a descriptor. */
  size: number;
  /** Bytes of all config and layer blobs referenced (for an index: over all its manifests). */
  blobBytes: number;
}

export interface PushedIndex extends PushedImage {
  /** `os/architecture` of each manifest, in index order. */
  platforms: string[];
  /** Each manifest's descriptor, in index order. */
  manifests: Descriptor[];
}

export interface MultiLayerOptions {
  /** Random layers on top of the busybox base layer (at least 5, default 5); the manifest has one more. */
  layers?: number;
  /** Uncompressed size of each random layer's one file: incompressible random bytes (default 64 KiB). */
  layerBytes?: number;
  /** Manifest format in the registry (default 'oci'; 'docker' is schema2). */
  format?: 'oci' | 'docker';
  /** Layer compression (default 'gzip'). */
  compression?: 'gzip' | 'none';
  tag?: string;
}

export interface ImageTools {
  /** Runs buildah with this instance's private vfs storage; returns stdout. */
  buildah(args: string[]): Promise<string>;
  /** Runs skopeo with the same isolated configuration (no host auth or registries.conf); returns stdout. */
  skopeo(args: string[]): Promise<string>;
  /** The instance's temp dir (storage root, runroot, configuration). */
  dir: string;
  /** The environment both run with, for a test that runs them itself (to read stderr). */
  env: Record<string, string>;
  /** Removes the storage and configuration. */
  cleanup(): Promise<void>;
}

/** Applets linked into the busybox base image's /bin. */
const APPLETS = [
  'sh',
  'ash',
  'ls',
  'cat',
  'echo',
  'env',
  'printf',
  'test',
  '[',
  'true',
  'false',
  'mkdir',
  'rm',
  'rmdir',
  'cp',
  'mv',
  'ln',
  'touch',
  'chmod',
  'stat',
  'find',
  'grep',
  'sed',
  'head',
  'tail',
  'wc',
  'sort',
  'id',
  'uname',
  'pwd',
  'sleep',
  'date',
  'hostname',
  'ps',
  'kill',
  'sha256sum',
  'du',
  'df',
  'tar',
  'gzip',
  'vi',
];
const PATH_ENV = 'PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin';
const CREATED = '2024-01-01T00:00:00Z';
const EPOCH = new Date(0);
const BUSYBOX = '/bin/busybox';
const BASE_IMAGE = 'localhost/strata-test/busybox:latest';
const PASSWD = 'root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n';
const GROUP = 'root:x:0:\nnobody:x:65534:\n';

const TRANSPORTS = [
  'docker://',
  'oci:',
  'oci-archive:',
  'dir:',
  'docker-archive:',
  'containers-storage:',
  'docker-daemon:',
];
const withTransport = (ref: string): string =>
  TRANSPORTS.some((t) => ref.startsWith(t)) ? ref : `docker://${ref}`;

type Creds = { username: string; password: string } | string;
const credsArg = (c: Creds): string => (typeof c === 'string' ? c : `${c.username}:${c.password}`);

// ---------------------------------------------------------------------------------------------------
// buildah / skopeo

/**
 * A private buildah/skopeo setup: vfs storage under a fresh temp dir, chroot isolation, an empty
 * registries.conf and auth file, so nothing is read from or leaks into the host's configuration.
 */
export async function imageTools(): Promise<ImageTools> {
  const dir = await tempDir('buildah');
  const registriesConf = join(dir, 'registries.conf');
  const authFile = join(dir, 'auth.json');
  await writeFile(registriesConf, 'unqualified-search-registries = []\n');
  await writeFile(authFile, '{"auths":{}}\n', { mode: 0o600 });
  const env = {
    CONTAINERS_REGISTRIES_CONF: registriesConf,
    REGISTRY_AUTH_FILE: authFile,
    BUILDAH_ISOLATION: 'chroot',
    TMPDIR: dir,
  };
  const storage = ['--root', join(dir, 'root'), '--runroot', join(dir, 'runroot'), '--storage-driver', 'vfs'];
  return {
    dir,
    env,
    buildah: (args) => runCommand('buildah', [...storage, ...args], { env, timeoutMs: 300_000 }),
    // Signature policy is not under test; --insecure-policy keeps the host's policy.json out of it.
    skopeo: (args) => runCommand('skopeo', ['--insecure-policy', ...args], { env, timeoutMs: 300_000 }),
    cleanup: () => removeTempDir(dir),
  };
}

let sharedTools: Promise<ImageTools> | undefined;
/** One private setup per process for the helpers below; its temp dir goes when the process exits. */
function tools(): Promise<ImageTools> {
  sharedTools ??= imageTools();
  return sharedTools;
}

export interface SkopeoOptions {
  /** Verify TLS (default false: test registries speak plain HTTP). */
  tlsVerify?: boolean;
  /** `user:password` or an object. */
  creds?: Creds;
}

/** `skopeo inspect` (parsed JSON); `raw` gives the manifest as served, `config` the image config. */
export async function skopeoInspect(
  ref: string,
  opts: SkopeoOptions & { raw?: boolean; config?: boolean } = {},
): Promise<unknown> {
  const args = ['inspect', `--tls-verify=${opts.tlsVerify ?? false}`];
  if (opts.creds !== undefined) args.push('--creds', credsArg(opts.creds));
  if (opts.raw) args.push('--raw');
  if (opts.config) args.push('--config');
  args.push(withTransport(ref));
  const out = await (await tools()).skopeo(args);
  return JSON.parse(out) as unknown;
}

/** `skopeo list-tags` of a repository (`host/name`): the tags it lists. */
export async function skopeoListTags(repo: string, opts: SkopeoOptions = {}): Promise<string[]> {
  const args = ['list-tags', `--tls-verify=${opts.tlsVerify ?? false}`];
  if (opts.creds !== undefined) args.push('--creds', credsArg(opts.creds));
  args.push(withTransport(repo));
  return (JSON.parse(await (await tools()).skopeo(args)) as { Tags: string[] }).Tags;
}

/** The raw manifest bytes of `ref` as skopeo receives them. */
export async function skopeoRawManifest(ref: string, opts: SkopeoOptions = {}): Promise<Buffer> {
  const args = ['inspect', `--tls-verify=${opts.tlsVerify ?? false}`, '--raw'];
  if (opts.creds !== undefined) args.push('--creds', credsArg(opts.creds));
  args.push(withTransport(ref));
  // runCommand decodes as UTF-8; manifests are JSON, so the round trip keeps their bytes.
  return Buffer.from(await (await tools()).skopeo(args), 'utf8');
}

export interface SkopeoCopyOptions {
  srcTlsVerify?: boolean;
  destTlsVerify?: boolean;
  srcCreds?: Creds;
  destCreds?: Creds;
  /** Copy every manifest of an index (`--all`). */
  all?: boolean;
  /** Convert the manifest (`--format`). */
  format?: 'oci' | 'v2s2';
  /** More skopeo copy flags, inserted before the references. */
  extraArgs?: string[];
}

/** `skopeo copy` between any transports (bare refs mean docker://); returns the written manifest digest. */
export async function skopeoCopy(src: string, dst: string, opts: SkopeoCopyOptions = {}): Promise<Digest> {
  const t = await tools();
  const work = await tempDir('skopeo-copy');
  try {
    const digestFile = join(work, 'digest');
    const args = ['copy', '--quiet', '--digestfile', digestFile];
    if (src.startsWith('docker://') || !TRANSPORTS.some((p) => src.startsWith(p))) {
      args.push(`--src-tls-verify=${opts.srcTlsVerify ?? false}`);
    }
    if (dst.startsWith('docker://') || !TRANSPORTS.some((p) => dst.startsWith(p))) {
      args.push(`--dest-tls-verify=${opts.destTlsVerify ?? false}`);
    }
    if (opts.srcCreds !== undefined) args.push('--src-creds', credsArg(opts.srcCreds));
    if (opts.destCreds !== undefined) args.push('--dest-creds', credsArg(opts.destCreds));
    if (opts.all) args.push('--all');
    if (opts.format) args.push('--format', opts.format);
    args.push(...(opts.extraArgs ?? []), withTransport(src), withTransport(dst));
    await t.skopeo(args);
    return parseDigest((await readFile(digestFile, 'utf8')).trim());
  } finally {
    await removeTempDir(work);
  }
}

// ---------------------------------------------------------------------------------------------------
// busybox base with buildah

let baseBuilt: Promise<void> | undefined;

/** Builds the busybox base image into the shared buildah storage once per process. */
function buildahBase(): Promise<void> {
  baseBuilt ??= (async () => {
    const t = await tools();
    const rootfs = join(t.dir, 'busybox-rootfs');
    for (const d of ['bin', 'etc', 'tmp', 'root']) await mkdir(join(rootfs, d), { recursive: true });
    await writeFile(join(rootfs, 'bin/busybox'), await readFile(BUSYBOX), { mode: 0o755 });
    for (const applet of APPLETS) await symlink('busybox', join(rootfs, 'bin', applet));
    await writeFile(join(rootfs, 'etc/passwd'), PASSWD);
    await writeFile(join(rootfs, 'etc/group'), GROUP);
    const container = (await t.buildah(['from', '--quiet', 'scratch'])).trim();
    try {
      await t.buildah(['copy', '--quiet', container, rootfs, '/']);
      await t.buildah(['run', container, '/bin/chmod', '1777', '/tmp']);
      await t.buildah([
        'config',
        '--os',
        'linux',
        '--arch',
        'amd64',
        '--env',
        PATH_ENV,
        '--cmd',
        '/bin/sh',
        '--created-by',
        'strata test: busybox-static',
        container,
      ]);
      await t.buildah(['commit', '--quiet', '--format', 'oci', container, BASE_IMAGE]);
    } finally {
      await t.buildah(['rm', container]).catch(() => {});
    }
  })();
  // A failed build is not cached: the next caller tries again.
  baseBuilt.catch(() => {
    baseBuilt = undefined;
  });
  return baseBuilt;
}

/** Pushes the single-layer busybox base (built with buildah) to `reg` as `repo:tag`. */
export async function pushBusybox(reg: PushTarget, repo: string, tag = 'latest'): Promise<PushedImage> {
  await buildahBase();
  const t = await tools();
  const ref = `${reg.host}/${repo}:${tag}`;
  const work = await tempDir('buildah-push');
  try {
    const digestFile = join(work, 'digest');
    const args = ['push', '--quiet', '--tls-verify=false', '--format', 'oci', '--digestfile', digestFile];
    if (reg.creds) args.push('--creds', credsArg(reg.creds));
    await t.buildah([...args, BASE_IMAGE, `docker://${ref}`]);
    const digest = parseDigest((await readFile(digestFile, 'utf8')).trim());
    return await describePushed(reg, ref, digest);
  } finally {
    await removeTempDir(work);
  }
}

// ---------------------------------------------------------------------------------------------------
// OCI layouts assembled here

/** Passes bytes through, hashing them. */
function hashing(digester: Digester): Transform {
  return new Transform({
    transform(chunk: Buffer, _enc: BufferEncoding, cb: TransformCallback) {
      digester.update(chunk);
      cb(null, chunk);
    },
  });
}

interface LayerBlob {
  descriptor: Descriptor;
  diffId: Digest;
}

/** An OCI image layout being written: blobs go in as they are made, index.json last. */
class LayoutWriter {
  readonly dir: string;
  private counter = 0;
  constructor(dir: string) {
    this.dir = dir;
  }

  async init(): Promise<void> {
    await mkdir(join(this.dir, 'blobs', 'sha256'), { recursive: true });
    await writeFile(join(this.dir, 'oci-layout'), '{"imageLayoutVersion":"1.0.0"}');
  }

  private blobPath(d: Digest): string {
    return join(this.dir, 'blobs', 'sha256', encodedOf(d));
  }

  async addJson(mediaType: string, value: unknown): Promise<Descriptor> {
    const bytes = Buffer.from(JSON.stringify(value));
    const digest = digestOf(bytes);
    await writeFile(this.blobPath(digest), bytes);
    return { mediaType, digest, size: bytes.length };
  }

  async addBytes(mediaType: string, bytes: Buffer): Promise<Descriptor> {
    const digest = digestOf(bytes);
    await writeFile(this.blobPath(digest), bytes);
    return { mediaType, digest, size: bytes.length };
  }

  /** Streams a tar layer made by `fill` to disk, compressed or not, hashing both forms on the way. */
  async addLayer(compression: 'gzip' | 'none', fill: (p: Pack) => Promise<void>): Promise<LayerBlob> {
    const tmp = join(this.dir, `layer-${this.counter++}.tmp`);
    const { diffId, digest, size } = await writeLayer(createWriteStream(tmp), compression, fill);
    await rename(tmp, this.blobPath(digest));
    const mediaType = compression === 'gzip' ? MediaType.ociLayerGzip : MediaType.ociLayer;
    return { descriptor: { mediaType, digest, size }, diffId };
  }

  async finish(root: Descriptor, tag: string): Promise<void> {
    const index = {
      schemaVersion: 2,
      manifests: [{ ...root, annotations: { 'org.opencontainers.image.ref.name': tag } }],
    };
    await writeFile(join(this.dir, 'index.json'), JSON.stringify(index));
  }
}

async function writeLayer(
  sink: Writable,
  compression: 'gzip' | 'none',
  fill: (p: Pack) => Promise<void>,
): Promise<{ diffId: Digest; digest: Digest; size: number }> {
  const tar = tarPack();
  const raw = new Digester();
  const packed = new Digester();
  // Level 1: the random payloads do not compress anyway, and big layers should be quick to make.
  const source = tar as unknown as AsyncIterable<Buffer>;
  const done =
    compression === 'gzip'
      ? pipeline(source, hashing(raw), createGzip({ level: 1 }), hashing(packed), sink)
      : pipeline(source, hashing(packed), sink);
  try {
    await fill(tar);
    tar.finalize();
  } catch (err) {
    tar.destroy(err as Error);
  }
  await done;
  return {
    diffId: compression === 'gzip' ? raw.digest() : packed.digest(),
    digest: packed.digest(),
    size: packed.size,
  };
}

/** Adds one tar entry; file contents come from `data` (a buffer, or a size to fill with random bytes). */
function addEntry(
  p: Pack,
  header: { name: string; type?: 'file' | 'directory' | 'symlink'; mode?: number; linkname?: string },
  data?: Buffer | number,
): Promise<void> {
  const type = header.type ?? 'file';
  const base = { mtime: EPOCH, uid: 0, gid: 0, uname: 'root', gname: 'root', ...header, type };
  if (type !== 'file' || Buffer.isBuffer(data) || data === undefined) {
    const content = Buffer.isBuffer(data) ? data : undefined;
    return new Promise((resolve, reject) => {
      const cb = (err?: Error | null): void => (err ? reject(err) : resolve());
      if (content) p.entry({ ...base, size: content.length }, content, cb);
      else p.entry({ ...base, size: 0 }, cb);
    });
  }
  const size = data;
  return new Promise((resolve, reject) => {
    const entry = p.entry({ ...base, size }, (err) => (err ? reject(err) : resolve()));
    const source = new PassThrough();
    source.pipe(entry);
    (async () => {
      const chunk = 1024 * 1024;
      for (let left = size; left > 0; left -= chunk) {
        if (!source.write(randomBytes(Math.min(chunk, left)))) {
          await new Promise((r) => source.once('drain', r));
        }
      }
      source.end();
    })().catch(reject);
  });
}

async function fillBusybox(p: Pack): Promise<void> {
  await addEntry(p, { name: 'bin/', type: 'directory', mode: 0o755 });
  await addEntry(p, { name: 'bin/busybox', mode: 0o755 }, await readFile(BUSYBOX));
  for (const applet of APPLETS) {
    await addEntry(p, { name: `bin/${applet}`, type: 'symlink', linkname: 'busybox', mode: 0o777 });
  }
  await addEntry(p, { name: 'etc/', type: 'directory', mode: 0o755 });
  await addEntry(p, { name: 'etc/passwd', mode: 0o644 }, Buffer.from(PASSWD));
  await addEntry(p, { name: 'etc/group', mode: 0o644 }, Buffer.from(GROUP));
  await addEntry(p, { name: 'root/', type: 'directory', mode: 0o700 });
  await addEntry(p, { name: 'tmp/', type: 'directory', mode: 0o1777 });
}

interface CachedLayer {
  gzip: Buffer;
  diffId: Digest;
}
let busyboxLayer: Promise<CachedLayer> | undefined;

/** The busybox base layer (gzip, deterministic: fixed mtimes and owners), made once per process. */
function busyboxGzipLayer(): Promise<CachedLayer> {
  busyboxLayer ??= (async () => {
    const chunks: Buffer[] = [];
    const sink = new PassThrough();
    sink.on('data', (c: Buffer) => chunks.push(c));
    const { diffId } = await writeLayer(sink, 'gzip', fillBusybox);
    return { gzip: Buffer.concat(chunks), diffId };
  })();
  busyboxLayer.catch(() => {
    busyboxLayer = undefined;
  });
  return busyboxLayer;
}

async function addBusyboxLayer(layout: LayoutWriter): Promise<LayerBlob> {
  const cached = await busyboxGzipLayer();
  return { descriptor: await layout.addBytes(MediaType.ociLayerGzip, cached.gzip), diffId: cached.diffId };
}

/** Writes config and manifest for `layers` and returns the manifest descriptor. */
async function addImage(
  layout: LayoutWriter,
  layers: LayerBlob[],
  architecture: string,
  history: string[],
  runConfig: Record<string, unknown> = { Env: [PATH_ENV], Cmd: ['/bin/sh'] },
): Promise<{ manifest: Descriptor; blobBytes: number }> {
  const config = await layout.addJson(MediaType.ociConfig, {
    created: CREATED,
    architecture,
    os: 'linux',
    config: runConfig,
    rootfs: { type: 'layers', diff_ids: layers.map((l) => l.diffId) },
    history: history.map((created_by) => ({ created: CREATED, created_by })),
  });
  const manifest = await layout.addJson(MediaType.ociManifest, {
    schemaVersion: 2,
    mediaType: MediaType.ociManifest,
    config,
    layers: layers.map((l) => l.descriptor),
  });
  const blobBytes = config.size + layers.reduce((n, l) => n + l.descriptor.size, 0);
  return { manifest, blobBytes };
}

/**
 * Pushes busybox plus `layers` random layers (one file of `layerBytes` random bytes each) to
 * `reg` as `repo:tag`. Big images work: `{ layers: 5, layerBytes: 50 * 1024 * 1024 }`.
 */
export async function pushMultiLayer(
  reg: PushTarget,
  repo: string,
  opts: MultiLayerOptions = {},
): Promise<PushedImage> {
  const count = opts.layers ?? 5;
  const layerBytes = opts.layerBytes ?? 64 * 1024;
  if (!Number.isInteger(count) || count < 5)
    throw new RangeError(`layers must be an integer >= 5, got ${count}`);
  if (!Number.isSafeInteger(layerBytes) || layerBytes < 0)
    throw new RangeError(`bad layerBytes ${layerBytes}`);
  const compression = opts.compression ?? 'gzip';
  const ref = `${reg.host}/${repo}:${opts.tag ?? 'latest'}`;
  const dir = await tempDir('oci-layout');
  try {
    const layout = new LayoutWriter(dir);
    await layout.init();
    const layers = [await addBusyboxLayer(layout)];
    const history = ['strata test: busybox-static'];
    for (let i = 1; i <= count; i++) {
      layers.push(
        await layout.addLayer(compression, (p) =>
          addEntry(p, { name: `data/layer-${i}.bin`, mode: 0o644 }, layerBytes),
        ),
      );
      history.push(`strata test: ${layerBytes} random bytes in /data/layer-${i}.bin`);
    }
    const { manifest } = await addImage(layout, layers, 'amd64', history);
    await layout.finish(manifest, 'latest');
    const digest = await skopeoCopy(`oci:${dir}:latest`, `docker://${ref}`, {
      destCreds: reg.creds,
      ...(opts.format === 'docker' ? { format: 'v2s2' as const } : {}),
    });
    return await describePushed(reg, ref, digest);
  } finally {
    await removeTempDir(dir);
  }
}

/** Content of one file in a layer: text or bytes, or a number of random bytes. */
export type FileContent = string | Buffer | number;

export interface FilesImageOptions {
  /** One layer per entry, each a map of absolute or relative path → content; parent dirs are added. */
  layers: Array<Record<string, FileContent>>;
  /** Put the busybox layer first, with busybox's PATH (default false: a scratch image). */
  busybox?: boolean;
  /** The config's Env (default: busybox's PATH with busybox, none without). */
  env?: string[];
  labels?: Record<string, string>;
  compression?: 'gzip' | 'none';
  format?: 'oci' | 'docker';
  tag?: string;
}

/** Adds `files` to a layer, each parent directory once and before its children. */
async function fillFiles(p: Pack, files: Record<string, FileContent>): Promise<void> {
  const dirs = new Set<string>();
  for (const [raw, content] of Object.entries(files)) {
    const name = raw.replace(/^\/+/, '');
    const parts = name.split('/');
    for (let i = 1; i < parts.length; i++) {
      const d = parts.slice(0, i).join('/');
      if (dirs.has(d)) continue;
      dirs.add(d);
      await addEntry(p, { name: `${d}/`, type: 'directory', mode: 0o755 });
    }
    const data = typeof content === 'string' ? Buffer.from(content) : content;
    await addEntry(p, { name, mode: 0o644 }, data);
  }
}

/**
 * Pushes an image made of the given files (one layer per map, in order) and config, e.g. an "IDE" image
 * with `/ide/bin/marker` and `GITPOD_ENV_*` variables. Random-content files may be large (streamed).
 */
export async function pushFilesImage(
  reg: PushTarget,
  repo: string,
  opts: FilesImageOptions,
): Promise<PushedImage & { layerDescriptors: Descriptor[]; diffIds: Digest[] }> {
  const ref = `${reg.host}/${repo}:${opts.tag ?? 'latest'}`;
  const dir = await tempDir('oci-layout');
  try {
    const layout = new LayoutWriter(dir);
    await layout.init();
    const layers: LayerBlob[] = [];
    const history: string[] = [];
    if (opts.busybox) {
      layers.push(await addBusyboxLayer(layout));
      history.push('strata test: busybox-static');
    }
    for (const files of opts.layers) {
      layers.push(await layout.addLayer(opts.compression ?? 'gzip', (p) => fillFiles(p, files)));
      history.push(`strata test: ${Object.keys(files).join(' ')}`);
    }
    const env = opts.env ?? (opts.busybox ? [PATH_ENV] : undefined);
    const runConfig: Record<string, unknown> = {};
    if (env) runConfig.Env = env;
    if (opts.busybox) runConfig.Cmd = ['/bin/sh'];
    if (opts.labels) runConfig.Labels = opts.labels;
    const { manifest } = await addImage(layout, layers, 'amd64', history, runConfig);
    await layout.finish(manifest, 'latest');
    const digest = await skopeoCopy(`oci:${dir}:latest`, `docker://${ref}`, {
      destCreds: reg.creds,
      ...(opts.format === 'docker' ? { format: 'v2s2' as const } : {}),
    });
    const pushed = await describePushed(reg, ref, digest);
    return {
      ...pushed,
      layerDescriptors: layers.map((l) => l.descriptor),
      diffIds: layers.map((l) => l.diffId),
    };
  } finally {
    await removeTempDir(dir);
  }
}

const PLATFORMS = [
  { os: 'linux', architecture: 'amd64' },
  { os: 'linux', architecture: 'arm64' },
];

/**
 * Pushes an OCI index with a linux/amd64 and a linux/arm64 manifest. Both hold the busybox layer plus a
 * small layer with /etc/strata-platform naming the platform; only the amd64 one runs on this machine.
 */
export async function pushTwoPlatformIndex(
  reg: PushTarget,
  repo: string,
  tag = 'latest',
): Promise<PushedIndex> {
  const ref = `${reg.host}/${repo}:${tag}`;
  const dir = await tempDir('oci-layout');
  try {
    const layout = new LayoutWriter(dir);
    await layout.init();
    const base = await addBusyboxLayer(layout);
    const manifests: Descriptor[] = [];
    for (const platform of PLATFORMS) {
      const name = `${platform.os}/${platform.architecture}`;
      const marker = await layout.addLayer('gzip', (p) =>
        addEntry(p, { name: 'etc/strata-platform', mode: 0o644 }, Buffer.from(`${name}\n`)),
      );
      const { manifest } = await addImage(layout, [base, marker], platform.architecture, [
        'strata test: busybox-static',
        `strata test: /etc/strata-platform for ${name}`,
      ]);
      manifests.push({ ...manifest, platform });
    }
    const index = await layout.addJson(MediaType.ociIndex, {
      schemaVersion: 2,
      mediaType: MediaType.ociIndex,
      manifests,
    });
    await layout.finish(index, 'latest');
    const digest = await skopeoCopy(`oci:${dir}:latest`, `docker://${ref}`, {
      destCreds: reg.creds,
      all: true,
    });
    const pushed = await describePushed(reg, ref, digest);
    return {
      ...pushed,
      platforms: PLATFORMS.map((p) => `${p.os}/${p.architecture}`),
      manifests: manifests.map(({ mediaType, digest: d, size, platform }) => ({
        mediaType,
        digest: d,
        size,
        platform,
      })),
    };
  } finally {
    await removeTempDir(dir);
  }
}

// ---------------------------------------------------------------------------------------------------

interface RawManifest {
  mediaType?: string;
  config?: { size: number };
  layers?: Array<{ size: number }>;
  manifests?: Descriptor[];
}

/** Reads back what the registry now serves for `ref` and checks it is what was pushed. */
async function describePushed(reg: PushTarget, ref: string, digest: Digest): Promise<PushedImage> {
  const opts = reg.creds ? { creds: reg.creds } : {};
  const bytes = await skopeoRawManifest(ref, opts);
  const served = digestOf(bytes);
  if (served !== digest) throw dataLoss(`${ref}: registry serves ${served}, push reported ${digest}`);
  const manifest = JSON.parse(bytes.toString('utf8')) as RawManifest;
  const repoRef = ref.slice(0, ref.lastIndexOf(':'));
  const digestRef = `${repoRef}@${digest}`;
  const mediaType = manifest.mediaType ?? MediaType.dockerManifest;
  const sumBlobs = (m: RawManifest): number =>
    (m.config?.size ?? 0) + (m.layers ?? []).reduce((n, l) => n + l.size, 0);
  if (!manifest.manifests) {
    return {
      ref,
      digestRef,
      digest,
      mediaType,
      layers: manifest.layers?.length ?? 0,
      size: bytes.length,
      blobBytes: sumBlobs(manifest),
    };
  }
  let layers = 0;
  let blobBytes = 0;
  for (const [i, child] of manifest.manifests.entries()) {
    const m = JSON.parse(
      (await skopeoRawManifest(`${repoRef}@${child.digest}`, opts)).toString('utf8'),
    ) as RawManifest;
    if (i === 0) layers = m.layers?.length ?? 0;
    blobBytes += sumBlobs(m);
  }
  return { ref, digestRef, digest, mediaType, layers, size: bytes.length, blobBytes };
}
