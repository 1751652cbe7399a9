// Image indexes of any shape (an index listing other indexes, entries with or without a platform), pushed
// with our own registry client: skopeo will not copy an index nested in another. Each image is one
// uncompressed layer holding /etc/strata-image with the image's name, so what was unpacked shows which
// manifest a client chose.
import { pack as tarPack } from 'tar-stream';
import type { Descriptor, Platform } from '../../src/oci/descriptor.ts';
import { digestOf } from '../../src/oci/digest.ts';
import { MediaType } from '../../src/oci/media-types.ts';
import { parseReference } from '../../src/oci/reference.ts';
import { RegistryClient, type Repository } from '../../src/registry/client.ts';
import type { PushTarget } from './images.ts';

/** An image manifest: its name (the marker file's text) and the platform its config states. */
export interface TreeImage {
  image: string;
  platform: Platform;
  /** The platform written in the parent index's descriptor; the config's when undefined, none when null. */
  listed?: Platform | null;
}

/** An index of entries; `platform` is what the parent index says of it (none when undefined). */
export interface TreeIndex {
  index: TreeEntry[];
  platform?: Platform;
}

export type TreeEntry = TreeImage | TreeIndex;

export interface PushedTree {
  ref: string;
  root: Descriptor;
  /** Each image's manifest digest by its name. */
  manifests: Map<string, string>;
  /** Each image's one diff id (so its snapshot's chain id) by its name. */
  diffIds: Map<string, string>;
}

const CREATED = '2024-01-01T00:00:00Z';

async function markerLayer(name: string): Promise<Buffer> {
  const p = tarPack();
  p.entry({ name: 'etc/strata-image', mode: 0o644, mtime: new Date(CREATED) }, `${name}\n`);
  p.finalize();
  const chunks: Buffer[] = [];
  for await (const c of p) chunks.push(c as Buffer);
  return Buffer.concat(chunks);
}

/** Pushes `root` (an index) to `reg` as `repo:tag`, every document and blob under that repository. */
export async function pushTree(
  reg: PushTarget,
  repo: string,
  tag: string,
  root: TreeIndex,
): Promise<PushedTree> {
  const client = new RegistryClient();
  const repository: Repository = { domain: reg.host, path: repo };
  const manifests = new Map<string, string>();
  const diffIds = new Map<string, string>();
  const documents = new Map<string, Buffer>();
  const blob = async (mediaType: string, bytes: Buffer): Promise<Descriptor> => {
    const desc = { mediaType, digest: digestOf(bytes), size: bytes.length };
    await client.uploadBlob(repository, desc, bytes);
    return desc;
  };
  const document = async (mediaType: string, value: unknown): Promise<Descriptor> => {
    const bytes = Buffer.from(JSON.stringify(value));
    const digest = digestOf(bytes);
    await client.putManifest(parseReference(`${reg.host}/${repo}@${digest}`), bytes, mediaType);
    documents.set(digest, bytes);
    return { mediaType, digest, size: bytes.length };
  };
  const push = async (entry: TreeEntry): Promise<Descriptor> => {
    if ('image' in entry) {
      const tar = await markerLayer(entry.image);
      const layer = await blob(MediaType.ociLayer, tar);
      diffIds.set(entry.image, layer.digest);
      const config = await blob(
        MediaType.ociConfig,
        Buffer.from(
          JSON.stringify({
            created: CREATED,
            ...entry.platform,
            config: {},
            rootfs: { type: 'layers', diff_ids: [digestOf(tar)] },
          }),
        ),
      );
      const desc = await document(MediaType.ociManifest, {
        schemaVersion: 2,
        mediaType: MediaType.ociManifest,
        config,
        layers: [layer],
      });
      manifests.set(entry.image, desc.digest);
      const listed = entry.listed === undefined ? entry.platform : entry.listed;
      return listed === null ? desc : { ...desc, platform: listed };
    }
    const children: Descriptor[] = [];
    for (const e of entry.index) children.push(await push(e));
    const desc = await document(MediaType.ociIndex, {
      schemaVersion: 2,
      mediaType: MediaType.ociIndex,
      manifests: children,
    });
    return entry.platform ? { ...desc, platform: entry.platform } : desc;
  };
  try {
    const top = await push({ index: root.index });
    // The same bytes again under the tag.
    const bytes = documents.get(top.digest)!;
    await client.putManifest(parseReference(`${reg.host}/${repo}:${tag}`), bytes, MediaType.ociIndex);
    return { ref: `${reg.host}/${repo}:${tag}`, root: top, manifests, diffIds };
  } finally {
    await client.close();
  }
}
