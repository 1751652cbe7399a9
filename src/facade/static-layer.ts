// Static layers of the facade's configuration: images whose layers are added to every composed image, and
// gzip files served as a layer of every composed image. A file is read once per version, streamed into the
// blob cache while its digest and diff_id are computed, so what is served is exactly what was hashed, and
// stays servable by digest when the file changes. Files are reloaded when they change (or only on
// refresh(), SIGHUP, when not watched); a bad version (unreadable, not gzip, corrupt) is reported and the
// previous one stays. A replaced version stays held in the cache for `keepMs` (the time the service keeps
// compositions servable by digest, so a manifest composed before the reload can still be pulled), then it
// is an ordinary cached blob, evicted when room is needed.
import { once } from 'node:events';
import { createReadStream } from 'node:fs';
import { createGunzip } from 'node:zlib';
import { invalidArgument, messageOf } from '../errors.ts';
import { Digester } from '../oci/digest.ts';
import { MediaType } from '../oci/media-types.ts';
import type { BlobCache, HeldBlob } from './blobs/cache.ts';
import type { Addition } from './compose/layers.ts';
import type { StaticLayer } from './service.ts';
import { WatchedFiles } from './watched-files.ts';

/** A version of a static layer file: its addition, and the hold on its bytes in the cache. */
export interface StaticFileVersion {
  addition: Addition;
  blob: HeldBlob;
}

/** Reads a gzip file into the cache (held) and describes it as a layer. */
export async function loadStaticFile(
  path: string,
  cache: Pick<BlobCache, 'addHeld'>,
): Promise<StaticFileVersion> {
  const what = `static layer ${path}`;
  const diffDigest = new Digester();
  const gunzip = createGunzip();
  gunzip.on('data', (c: Buffer) => diffDigest.update(c));
  const unzipped = once(gunzip, 'end');
  unzipped.catch(() => {});
  async function* bytes(): AsyncGenerator<Buffer> {
    let first = true;
    for await (const chunk of createReadStream(path)) {
      const buf = chunk as Buffer;
      if (first && (buf[0] !== 0x1f || buf[1] !== 0x8b)) throw invalidArgument(`${what}: not a gzip file`);
      first = false;
      if (!gunzip.write(buf)) await Promise.race([once(gunzip, 'drain'), unzipped]);
      yield buf;
    }
    if (first) throw invalidArgument(`${what}: empty`);
    gunzip.end();
    await unzipped;
  }
  let blob: HeldBlob;
  try {
    blob = await cache.addHeld(bytes());
  } catch (err) {
    gunzip.destroy();
    throw invalidArgument(`${what}: ${messageOf(err)}`);
  }
  return {
    blob,
    addition: {
      source: `static ${path}`,
      layers: [
        {
          descriptor: { mediaType: MediaType.ociLayerGzip, digest: blob.digest, size: blob.size },
          diffId: diffDigest.digest(),
          origin: { kind: 'static' },
        },
      ],
    },
  };
}

export type StaticLayerConfig = { ref: string } | { file: string };

export interface StaticLayersOptions {
  cache: Pick<BlobCache, 'addHeld'>;
  /** How long a replaced file's bytes stay held (the service's composition history TTL). */
  keepMs: number;
  /** Watch the files (default true); false: only refresh() reads them again. */
  watch?: boolean;
  /** The layers changed (a file was reloaded). */
  onChange?: (layers: StaticLayer[]) => void;
  onReload?: (path: string) => void;
  onReloadError?: (err: unknown) => void;
}

export class StaticLayers {
  private readonly entries: ({ ref: string } | { file: WatchedFiles<StaticFileVersion> })[];
  private readonly timers = new Set<NodeJS.Timeout>();
  private readonly held = new Set<HeldBlob>();

  private constructor(entries: StaticLayers['entries']) {
    this.entries = entries;
  }

  /** Reads every file now (a bad one is an error: the facade does not start). */
  static async open(configs: readonly StaticLayerConfig[], o: StaticLayersOptions): Promise<StaticLayers> {
    const entries: StaticLayers['entries'] = [];
    const layers = new StaticLayers(entries);
    try {
      for (const c of configs) {
        if ('ref' in c) {
          entries.push({ ref: c.ref });
          continue;
        }
        const path = c.file;
        let current: StaticFileVersion | undefined;
        const file = await WatchedFiles.open<StaticFileVersion>([path], {
          what: `static layer ${path}`,
          watch: o.watch,
          // Streamed into the cache, never read whole into memory.
          load: () => loadStaticFile(path, o.cache),
          onReload: (v) => {
            // The replaced version is kept for compositions made before the reload, then let go.
            if (current) layers.releaseLater(current.blob, o.keepMs);
            current = v;
            layers.held.add(v.blob);
            o.onReload?.(path);
            o.onChange?.(layers.layers);
          },
          onReloadError: o.onReloadError,
        });
        current = file.value;
        layers.held.add(current.blob);
        entries.push({ file });
      }
    } catch (err) {
      layers.close();
      throw err;
    }
    return layers;
  }

  /** The layers in configuration order, files as their current version. */
  get layers(): StaticLayer[] {
    return this.entries.map((e) =>
      'ref' in e ? { kind: 'image', ref: e.ref } : { kind: 'file', addition: e.file.value.addition },
    );
  }

  /** Reads the files that changed, and those refused before (SIGHUP). */
  async refresh(): Promise<void> {
    await Promise.all(this.entries.map((e) => ('file' in e ? e.file.reread() : undefined)));
  }

  private releaseLater(blob: HeldBlob, ms: number): void {
    const t = setTimeout(() => {
      this.timers.delete(t);
      this.held.delete(blob);
      blob.release();
    }, ms);
    t.unref();
    this.timers.add(t);
  }

  close(): void {
    for (const e of this.entries) if ('file' in e) e.file.close();
    for (const t of this.timers) clearTimeout(t);
    this.timers.clear();
    for (const b of this.held) b.release();
    this.held.clear();
  }
}
