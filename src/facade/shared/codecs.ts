// Value formats of the shared cache. Every decode checks what it can against the key: a composition's
// manifest bytes must hash to the digest it is stored under, its config to the manifest's config
// descriptor, a direct layer's bytes to its descriptor, an upstream manifest's or config's bytes to the
// digest they are stored under; anything else is an error, so the store counts the value as corrupt and
// the facade acts as on a miss. Each codec's version is part of its keys: a change to what a codec writes
// bumps it, so replicas of the old and the new release sharing one Redis each miss the other's entries.
import { type Descriptor, parseDescriptor } from '../../oci/descriptor.ts';
import { algorithmOf, type Digest, digestOf, parseDigest } from '../../oci/digest.ts';
import { parseImageConfig, parseManifest } from '../../oci/manifest.ts';
import type { ComposedImage, ComposedLayer } from '../compose/compose.ts';
import type { LayerOrigin } from '../compose/layers.ts';
import { familyOf } from '../compose/media-types.ts';
import type { ImageSpec, SpecJsonCodec } from '../spec.ts';
import type { SharedCodec } from './shared-store.ts';

/** A composition as replicas share it: the name it was composed for, its base ref, the image. */
export interface NamedComposition {
  name: string;
  baseRef: string;
  image: ComposedImage;
}

const utf8 = new TextEncoder();
const text = new TextDecoder('utf-8', { fatal: true });

function json(bytes: Uint8Array): unknown {
  return JSON.parse(text.decode(bytes));
}

function matches(bytes: Uint8Array, digest: string): boolean {
  const d = parseDigest(digest);
  return digestOf(bytes, algorithmOf(d)) === d;
}

function isObj(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

/** A tag's resolution (the descriptor the registry answered). */
export const descriptorCodec: SharedCodec<Descriptor> = {
  version: 1,
  encode: (d) => utf8.encode(JSON.stringify(d)),
  decode: (_key, bytes) => parseDescriptor(json(bytes), 'shared tag resolution'),
};

/** A manifest or config fetched from a registry, under its digest: the bytes, which must hash to it. */
export const verifiedBytesCodec: SharedCodec<Uint8Array> = {
  version: 1,
  encode: (bytes) => bytes,
  decode: (key, bytes) => {
    if (!matches(bytes, key)) throw new Error('bytes do not match the digest they are stored under');
    return bytes;
  },
};

/** A manifest digest, an item of a name's recent list (a JSON list of them before lists were pushed). */
export const digestCodec: SharedCodec<Digest> = {
  version: 1,
  encode: (digest) => utf8.encode(digest),
  decode: (_key, bytes) => parseDigest(text.decode(bytes)),
};

/** Specs in their protobuf-JSON form (the codec the spec store uses). */
export function specCodec(codec: SpecJsonCodec): SharedCodec<ImageSpec> {
  return {
    version: 1,
    encode: (spec) => utf8.encode(JSON.stringify(codec.format(spec))),
    decode: (key, bytes) => codec.parse(json(bytes), `shared spec ${key}`),
  };
}

type StoredOrigin =
  | { kind: 'base' }
  | { kind: 'static' }
  | { kind: 'image'; ref: string }
  | { kind: 'remote'; url: string }
  | { kind: 'direct'; content: string };

function storeOrigin(o: LayerOrigin): StoredOrigin {
  return o.kind === 'direct' ? { kind: 'direct', content: Buffer.from(o.content).toString('base64') } : o;
}

function loadOrigin(v: unknown, layer: Descriptor): LayerOrigin {
  if (!isObj(v)) throw new Error('layer origin is not an object');
  switch (v.kind) {
    case 'base':
      return { kind: 'base' };
    // Served from this replica's blob cache by digest, where its own static layer files put it.
    case 'static':
      return { kind: 'static' };
    case 'image':
      if (typeof v.ref !== 'string') throw new Error('image origin without ref');
      return { kind: 'image', ref: v.ref };
    case 'remote':
      if (typeof v.url !== 'string' || !URL.canParse(v.url)) throw new Error('remote origin without URL');
      return { kind: 'remote', url: v.url };
    case 'direct': {
      if (typeof v.content !== 'string') throw new Error('direct origin without content');
      const content = new Uint8Array(Buffer.from(v.content, 'base64'));
      if (!matches(content, layer.digest))
        throw new Error(`direct layer ${layer.digest}: bytes do not match`);
      return { kind: 'direct', content };
    }
    default:
      throw new Error(`unknown layer origin ${JSON.stringify(v.kind)}`);
  }
}

/**
 * A composition under its manifest digest: one line of JSON (name, base ref, config size, layer origins),
 * then the manifest bytes, then the config bytes, exactly as served.
 */
export const compositionCodec: SharedCodec<NamedComposition> = {
  version: 1,
  encode: (c) => {
    const header = {
      name: c.name,
      baseRef: c.baseRef,
      configSize: c.image.configBytes.byteLength,
      origins: c.image.layers.map((l) => storeOrigin(l.origin)),
    };
    return Buffer.concat([
      utf8.encode(`${JSON.stringify(header)}\n`),
      c.image.manifestBytes,
      c.image.configBytes,
    ]);
  },
  decode: (key, bytes) => {
    const digest = parseDigest(key);
    const nl = bytes.indexOf(0x0a);
    if (nl < 0) throw new Error('no header line');
    const h = json(bytes.subarray(0, nl));
    if (!isObj(h) || typeof h.name !== 'string' || typeof h.baseRef !== 'string')
      throw new Error('bad header');
    const configSize = h.configSize;
    const rest = bytes.subarray(nl + 1);
    if (
      typeof configSize !== 'number' ||
      !Number.isSafeInteger(configSize) ||
      configSize < 0 ||
      configSize > rest.byteLength
    )
      throw new Error('bad config size');
    const manifestBytes = rest.slice(0, rest.byteLength - configSize);
    const configBytes = rest.slice(rest.byteLength - configSize);
    if (!matches(manifestBytes, digest))
      throw new Error('manifest bytes do not match the digest they are stored under');
    const parsed = parseManifest(manifestBytes);
    if (parsed.kind !== 'manifest') throw new Error('not an image manifest');
    const manifest = parsed.manifest;
    const configDigest = parseDigest(manifest.config.digest);
    if (manifest.config.size !== configSize || !matches(configBytes, configDigest))
      throw new Error('config bytes do not match the manifest');
    const config = parseImageConfig(configBytes);
    const diffIds = config.rootfs.diff_ids;
    const origins = h.origins;
    if (
      !Array.isArray(origins) ||
      origins.length !== manifest.layers.length ||
      diffIds.length !== manifest.layers.length
    )
      throw new Error('layers, diff_ids and origins differ in number');
    const layers: ComposedLayer[] = manifest.layers.map((descriptor, i) => ({
      descriptor,
      diffId: parseDigest(diffIds[i]!),
      origin: loadOrigin(origins[i], descriptor),
    }));
    return {
      name: h.name,
      baseRef: h.baseRef,
      image: {
        family: familyOf(parsed.mediaType, manifest.config.mediaType),
        mediaType: parsed.mediaType,
        manifest,
        config,
        manifestBytes,
        configBytes,
        manifestDigest: digest,
        configDigest,
        layers,
      },
    };
  },
};
