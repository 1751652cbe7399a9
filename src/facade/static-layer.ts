// A static layer of the facade's configuration: a gzip file served as a layer of every composed image.
import { createReadStream } from 'node:fs';
import { readFile } from 'node:fs/promises';
import { pipeline } from 'node:stream/promises';
import { createGunzip } from 'node:zlib';
import { invalidArgument, messageOf } from '../errors.ts';
import { type Digest, Digester } from '../oci/digest.ts';
import { MediaType } from '../oci/media-types.ts';
import type { Addition } from './compose/layers.ts';

/** A static layer from a gzip file: digest of the file, diff_id of its decompressed bytes. */
export async function staticFileLayer(path: string): Promise<{ addition: Addition; digest: Digest }> {
  const fileDigest = new Digester();
  const diffDigest = new Digester();
  const head = await readFile(path).then(
    (b) => b.subarray(0, 2),
    (err: unknown) => {
      throw invalidArgument(`static layer ${path}: ${messageOf(err)}`);
    },
  );
  if (head[0] !== 0x1f || head[1] !== 0x8b) throw invalidArgument(`static layer ${path}: not a gzip file`);
  const gunzip = createGunzip();
  gunzip.on('data', (c: Buffer) => diffDigest.update(c));
  try {
    await pipeline(
      createReadStream(path),
      async function* (source) {
        for await (const chunk of source) {
          fileDigest.update(chunk as Buffer);
          yield chunk;
        }
      },
      gunzip,
    );
  } catch (err) {
    throw invalidArgument(`static layer ${path}: ${messageOf(err)}`);
  }
  const digest = fileDigest.digest();
  return {
    digest,
    addition: {
      source: `static ${path}`,
      layers: [
        {
          descriptor: { mediaType: MediaType.ociLayerGzip, digest, size: fileDigest.size },
          diffId: diffDigest.digest(),
          // Served by the static-file source, which matches on the digest before origins are looked at.
          origin: { kind: 'remote', url: new URL(`file://${path}`).href },
        },
      ],
    },
  };
}
