// The unpack test image: a busybox base layer plus three layers that exercise everything an applier and
// a snapshotter must get right — deletions (whiteouts of files, directories and one name of a hardlink
// group), an opaque directory, hardlinks within and across layers, relative, absolute and dangling
// symlinks, a write through an absolute directory symlink, an extended attribute, a directory replaced by a file and a file by a
// directory, modes (setuid, sticky, private), owners, a fifo, a PAX long name and a non-ASCII name. Layer
// compressions are gzip, zstd, gzip. Built as an OCI layout (deterministic: fixed times, seeded bytes)
// and pushed with skopeo, which keeps the layers as they are.
import { createHash } from 'node:crypto';
import { mkdir, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { gzipSync, zstdCompressSync } from 'node:zlib';
import { dataLoss } from '../../src/errors.ts';
import type { Descriptor } from '../../src/oci/descriptor.ts';
import { type Digest, digestOf, encodedOf } from '../../src/oci/digest.ts';
import { MediaType } from '../../src/oci/media-types.ts';
import { type LayerEntry, makeLayer, T0 } from '../fixtures/hostile-layers/build.ts';
import { skopeoCopy, skopeoRawManifest } from './images.ts';
import type { TestRegistry } from './registry.ts';
import { removeTempDir, tempDir } from './tmp.ts';

export interface LayeredImage {
  /** `host/repo:tag`. */
  ref: string;
  /** Manifest digest as the registry serves it. */
  digest: Digest;
  configDigest: Digest;
  layers: Descriptor[];
  diffIds: Digest[];
  /** OCI chain IDs, bottom to top: the committed snapshot names an unpack creates. */
  chainIds: Digest[];
}

const BUSYBOX = '/bin/busybox';
const APPLETS = ['sh', 'ls', 'cat', 'echo', 'stat', 'find', 'readlink', 'sha256sum', 'test', 'true'];
const PATH_ENV = 'PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin';
const LONG_DIR = `data/${'long-directory-name-'.repeat(8)}end`;

/** Deterministic pseudo-random bytes (content only has to differ, not be secret). */
function seeded(seed: string, size: number): Buffer {
  const out = Buffer.alloc(size);
  for (let at = 0, i = 0; at < size; i++) {
    const block = createHash('sha256').update(`${seed}:${i}`).digest();
    at += block.copy(out, at);
  }
  return out;
}

const dir = (name: string, mode = 0o755, more: Partial<LayerEntry> = {}): LayerEntry => ({
  name: `${name}/`,
  type: 'directory',
  mode,
  ...more,
});
const file = (
  name: string,
  content: string | Buffer,
  mode = 0o644,
  more: Partial<LayerEntry> = {},
): LayerEntry => ({
  name,
  content,
  mode,
  ...more,
});
const sym = (name: string, target: string): LayerEntry => ({
  name,
  type: 'symlink',
  linkname: target,
  mode: 0o777,
});
const hard = (name: string, target: string): LayerEntry => ({ name, type: 'link', linkname: target });

async function baseLayer(): Promise<LayerEntry[]> {
  return [
    dir('bin'),
    file('bin/busybox', await readFile(BUSYBOX), 0o755),
    ...APPLETS.map((a) => sym(`bin/${a}`, 'busybox')),
    dir('etc'),
    file(
      'etc/passwd',
      'root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n',
    ),
    file('etc/group', 'root:x:0:\nnobody:x:65534:\n'),
    dir('root', 0o700),
    dir('tmp', 0o1777),
  ];
}

function layer1(): LayerEntry[] {
  return [
    dir('data'),
    file('data/a.txt', 'alpha\n'),
    file('data/gone.txt', 'to be deleted\n'),
    dir('data/gone-dir'),
    file('data/gone-dir/f1', 'one\n'),
    dir('data/gone-dir/sub'),
    file('data/gone-dir/sub/f2', 'two\n'),
    dir('data/keep'),
    file('data/keep/x', 'kept\n'),
    file('data/hl-src', 'shared by three names\n', 0o640, { uid: 1000, gid: 1000 }),
    hard('data/hl-1', 'data/hl-src'),
    sym('data/rel-link', 'a.txt'),
    sym('data/abs-link', '/data/a.txt'),
    sym('data/dangling', '/nonexistent/target'),
    sym('data/dirlink', '/opq'),
    { name: 'data/fifo', type: 'fifo', mode: 0o600 },
    file('data/empty', ''),
    file('data/attrs', 'with an extended attribute\n', 0o644, {
      pax: { 'SCHILY.xattr.user.strata': 'kept' },
    }),
    file('data/big', seeded('big', 256 * 1024)),
    file('data/suid', '#!/bin/sh\n', 0o4755),
    dir('data/sticky', 0o1777),
    dir('data/private', 0o700, { uid: 1000, gid: 1000 }),
    file('data/private/secret', 'psst\n', 0o600, { uid: 1000, gid: 1000, mtime: T0 + 12345 }),
    dir(LONG_DIR),
    file(`${LONG_DIR}/file`, 'long path\n'),
    file('data/ünïcødé.txt', 'utf-8 name\n'),
    dir('opq'),
    file('opq/old1', 'old\n'),
    dir('opq/sub'),
    file('opq/sub/old2', 'old too\n'),
    dir('replace-me'),
    file('replace-me/inner', 'inside a directory that becomes a file\n'),
    file('file-to-dir', 'a file that becomes a directory\n'),
  ];
}

function layer2(crossLayerHardlink: boolean): LayerEntry[] {
  return [
    dir('data', 0o755, { mtime: T0 + 100 }),
    file('data/.wh.gone.txt', ''),
    file('data/.wh.gone-dir', ''),
    file('data/a.txt', 'alpha, second version\n', 0o664, { mtime: T0 + 100 }),
    dir('data/keep', 0o750),
    // containerd's overlayfs unpack cannot link to a lower layer's file (it fails the pull).
    ...(crossLayerHardlink ? [hard('data/hl-2', 'data/hl-src')] : []),
    file('data/rel-link', 'no longer a symlink\n'),
    sym('data/new-link', '../opq/new1'),
    dir('opq', 0o755, { mtime: T0 + 100 }),
    file('opq/.wh..wh..opq', ''),
    file('opq/new1', 'new after opaque\n'),
    file('replace-me', 'now a file\n', 0o600),
    dir('file-to-dir', 0o711),
    file('file-to-dir/child', 'inside the new directory\n'),
  ];
}

function layer3(): LayerEntry[] {
  return [
    file('data/.wh.hl-1', ''),
    // Through the absolute symlink data/dirlink → /opq: lands in /opq, inside the root.
    file('data/dirlink/through.txt', 'written through a symlinked parent\n'),
    file('data/big', seeded('big-v2', 300 * 1024 + 7), 0o444),
  ];
}

interface BuiltLayer {
  descriptor: Descriptor;
  diffId: Digest;
  bytes: Buffer;
}

async function build(entries: LayerEntry[], compression: 'gzip' | 'zstd'): Promise<BuiltLayer> {
  const tar = await makeLayer(entries);
  if (compression === 'gzip') return gzipped(tar);
  const bytes = zstdCompressSync(tar);
  return {
    descriptor: { mediaType: MediaType.ociLayerZstd, digest: digestOf(bytes), size: bytes.length },
    diffId: digestOf(tar),
    bytes,
  };
}

export function chainIds(diffIds: readonly Digest[]): Digest[] {
  const out: Digest[] = [];
  for (const d of diffIds) {
    const prev = out.at(-1);
    out.push(prev === undefined ? d : digestOf(`${prev} ${d}`));
  }
  return out;
}

/** Pushes the test image to `reg` as `repo:tag`, checking the registry serves it as built. */
export async function pushLayeredImage(
  reg: TestRegistry,
  repo: string,
  tag = 'latest',
  opts: { crossLayerHardlink?: boolean } = {},
): Promise<LayeredImage> {
  const layers = [
    await build(await baseLayer(), 'gzip'),
    await build(layer1(), 'gzip'),
    await build(layer2(opts.crossLayerHardlink ?? true), 'zstd'),
    await build(layer3(), 'gzip'),
  ];
  return pushBuilt(reg, repo, tag, layers);
}

/** Pushes an image of these layer tars (gzip, bytes as given) to `reg` as `repo:tag`. */
export async function pushTars(
  reg: TestRegistry,
  repo: string,
  tars: readonly Buffer[],
  tag = 'latest',
): Promise<LayeredImage> {
  return pushBuilt(reg, repo, tag, tars.map(gzipped));
}

function gzipped(tar: Buffer): BuiltLayer {
  const bytes = gzipSync(tar);
  return {
    descriptor: { mediaType: MediaType.ociLayerGzip, digest: digestOf(bytes), size: bytes.length },
    diffId: digestOf(tar),
    bytes,
  };
}

/** Pushes an image of these layers (gzip) to `reg` as `repo:tag`. */
export async function pushLayers(
  reg: TestRegistry,
  repo: string,
  layers: readonly LayerEntry[][],
  tag = 'latest',
): Promise<LayeredImage> {
  const built: BuiltLayer[] = [];
  for (const entries of layers) built.push(await build(entries, 'gzip'));
  return pushBuilt(reg, repo, tag, built);
}

async function pushBuilt(
  reg: TestRegistry,
  repo: string,
  tag: string,
  layers: readonly BuiltLayer[],
): Promise<LayeredImage> {
  const config = Buffer.from(
    JSON.stringify({
      created: '2024-01-01T00:00:00Z',
      architecture: 'amd64',
      os: 'linux',
      config: { Env: [PATH_ENV], Cmd: ['/bin/sh'] },
      rootfs: { type: 'layers', diff_ids: layers.map((l) => l.diffId) },
      history: layers.map((_, i) => ({
        created: '2024-01-01T00:00:00Z',
        created_by: `strata test: layer ${i}`,
      })),
    }),
  );
  const configDesc: Descriptor = {
    mediaType: MediaType.ociConfig,
    digest: digestOf(config),
    size: config.length,
  };
  const manifest = Buffer.from(
    JSON.stringify({
      schemaVersion: 2,
      mediaType: MediaType.ociManifest,
      config: configDesc,
      layers: layers.map((l) => l.descriptor),
    }),
  );
  const manifestDesc: Descriptor = {
    mediaType: MediaType.ociManifest,
    digest: digestOf(manifest),
    size: manifest.length,
  };

  const layout = await tempDir('layered-layout');
  try {
    const blobs = join(layout, 'blobs', 'sha256');
    await mkdir(blobs, { recursive: true });
    await writeFile(join(layout, 'oci-layout'), '{"imageLayoutVersion":"1.0.0"}');
    for (const [d, bytes] of [
      ...layers.map((l) => [l.descriptor.digest, l.bytes] as const),
      [configDesc.digest, config] as const,
      [manifestDesc.digest, manifest] as const,
    ]) {
      await writeFile(join(blobs, encodedOf(d as Digest)), bytes);
    }
    await writeFile(
      join(layout, 'index.json'),
      JSON.stringify({
        schemaVersion: 2,
        manifests: [{ ...manifestDesc, annotations: { 'org.opencontainers.image.ref.name': tag } }],
      }),
    );
    const ref = `${reg.host}/${repo}:${tag}`;
    const pushed = await skopeoCopy(`oci:${layout}:${tag}`, `docker://${ref}`, {
      ...(reg.creds ? { destCreds: reg.creds } : {}),
    });
    const served = digestOf(await skopeoRawManifest(ref, reg.creds ? { creds: reg.creds } : {}));
    if (pushed !== manifestDesc.digest || served !== manifestDesc.digest) {
      throw dataLoss(`${ref}: built ${manifestDesc.digest}, pushed ${pushed}, served ${served}`);
    }
    const diffIds = layers.map((l) => l.diffId);
    return {
      ref,
      digest: manifestDesc.digest as Digest,
      configDigest: configDesc.digest as Digest,
      layers: layers.map((l) => l.descriptor),
      diffIds,
      chainIds: chainIds(diffIds),
    };
  } finally {
    await removeTempDir(layout);
  }
}
