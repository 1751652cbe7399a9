// The facade's domain ImageSpec: what one workspace image is composed from. The gRPC adapter translates the
// registryfacade.ImageSpec protobuf into this shape (int64 size → number) and calls validateImageSpec
// before anything is resolved, so bad specs fail early with one clear InvalidArgument.
import { invalidArgument, messageOf } from '../errors.ts';
import { type Digest, parseDigest } from '../oci/digest.ts';
import { MediaType } from '../oci/media-types.ts';
import { parseNormalizedReference } from '../oci/reference.ts';

export interface RemoteContentLayer {
  kind: 'remote';
  /** Where the client fetches the blob (the facade redirects there). https, or http for allowed hosts. */
  url: string;
  digest: string;
  /** Digest of the uncompressed tar; '' means the blob is an uncompressed tar (diff_id = digest). */
  diffId: string;
  mediaType: string;
  size: number;
}

export interface DirectContentLayer {
  kind: 'direct';
  /** An uncompressed tar. */
  content: Uint8Array;
}

export type ContentLayer = RemoteContentLayer | DirectContentLayer;

export interface ImageSpec {
  baseRef: string;
  /** '' when absent. */
  ideRef: string;
  /** '' when absent. */
  supervisorRef: string;
  ideLayerRefs: string[];
  contentLayers: ContentLayer[];
}

/**
 * The protobuf-JSON form of a spec (`baseRef`, `contentLayer`, …), in which the spec store and fixed-spec
 * files keep specs. The api layer implements it; providers receive it, so they import no generated code.
 */
export interface SpecJsonCodec {
  /** A spec from its JSON form; errors are InvalidArgument naming `where`. */
  parse(json: unknown, where: string): ImageSpec;
  format(spec: ImageSpec): unknown;
}

/** Roughly the bytes a spec holds in memory: its direct layers' content, and the rest by its strings. */
export function specSize(spec: ImageSpec): number {
  let n = spec.baseRef.length + spec.ideRef.length + spec.supervisorRef.length;
  for (const ref of spec.ideLayerRefs) n += ref.length;
  for (const l of spec.contentLayers) n += l.kind === 'direct' ? l.content.byteLength : l.url.length + 200;
  return n;
}

/** Which image an added image is in the spec; names the source in history and logs. */
export type AddedImageRole = 'ide' | 'supervisor' | 'ide-layer';

export interface AddedImageRef {
  role: AddedImageRole;
  ref: string;
}

/** The images whose layers go on top of the base, in Gitpod's order; empty refs are skipped. */
export function addedImageRefs(spec: ImageSpec): AddedImageRef[] {
  const out: AddedImageRef[] = [];
  if (spec.ideRef !== '') out.push({ role: 'ide', ref: spec.ideRef });
  if (spec.supervisorRef !== '') out.push({ role: 'supervisor', ref: spec.supervisorRef });
  for (const ref of spec.ideLayerRefs) if (ref !== '') out.push({ role: 'ide-layer', ref });
  return out;
}

export const CONTENT_LAYER_MEDIA_TYPES: readonly string[] = [
  MediaType.ociLayer,
  MediaType.ociLayerGzip,
  MediaType.ociLayerZstd,
];

/**
 * At most this many ideLayerRefs and content layers each: every added image is resolved and fetched while
 * the first client waits, so the work one spec can ask for is bounded. Far above what a workspace uses.
 */
export const MAX_SPEC_LIST_ENTRIES = 128;

export interface SpecValidationOptions {
  /** Hosts (hostname or hostname:port, as in URL.host) whose content layers may be fetched over plain http. */
  allowHttpHost?: (host: string) => boolean;
}

/** Checks every field; throws InvalidArgument naming the first bad one. Returns the spec for chaining. */
export function validateImageSpec(spec: ImageSpec, options: SpecValidationOptions = {}): ImageSpec {
  if (spec.baseRef === '') throw invalidArgument('image spec: baseRef is required');
  checkRef(spec.baseRef, 'baseRef');
  if (spec.ideRef !== '') checkRef(spec.ideRef, 'ideRef');
  if (spec.supervisorRef !== '') checkRef(spec.supervisorRef, 'supervisorRef');
  checkLength(spec.ideLayerRefs, 'ideLayerRefs');
  checkLength(spec.contentLayers, 'contentLayers');
  spec.ideLayerRefs.forEach((ref, i) => {
    if (ref !== '') checkRef(ref, `ideLayerRefs[${i}]`);
  });
  spec.contentLayers.forEach((layer, i) => {
    checkContentLayer(layer, `contentLayers[${i}]`, options);
  });
  return spec;
}

function checkLength(list: readonly unknown[], where: string): void {
  if (list.length > MAX_SPEC_LIST_ENTRIES)
    throw invalidArgument(
      `image spec: ${where} has ${list.length} entries; at most ${MAX_SPEC_LIST_ENTRIES} are allowed`,
    );
}

function checkRef(ref: string, where: string): void {
  try {
    parseNormalizedReference(ref);
  } catch (err) {
    throw invalidArgument(`image spec: ${where}: ${messageOf(err)}`, { cause: err });
  }
}

function checkDigest(value: string, where: string): Digest {
  try {
    return parseDigest(value);
  } catch (err) {
    throw invalidArgument(`image spec: ${where}: ${messageOf(err)}`, { cause: err });
  }
}

function checkContentLayer(layer: ContentLayer, where: string, options: SpecValidationOptions): void {
  if (layer.kind === 'direct') {
    if (!(layer.content instanceof Uint8Array) || layer.content.byteLength === 0) {
      throw invalidArgument(`image spec: ${where}: direct layer content is empty`);
    }
    return;
  }
  if (layer.kind !== 'remote') {
    throw invalidArgument(
      `image spec: ${where}: unknown layer kind ${JSON.stringify((layer as { kind: unknown }).kind)}`,
    );
  }
  let url: URL;
  try {
    url = new URL(layer.url);
  } catch {
    throw invalidArgument(`image spec: ${where}: url ${JSON.stringify(layer.url)} is not a valid URL`);
  }
  const httpAllowed = url.protocol === 'http:' && (options.allowHttpHost?.(url.host) ?? false);
  if (url.protocol !== 'https:' && !httpAllowed) {
    throw invalidArgument(
      `image spec: ${where}: url must be https (http only for configured hosts), got ${url.protocol}//${url.host}`,
    );
  }
  checkDigest(layer.digest, `${where}.digest`);
  if (!CONTENT_LAYER_MEDIA_TYPES.includes(layer.mediaType)) {
    throw invalidArgument(
      `image spec: ${where}: mediaType ${JSON.stringify(layer.mediaType)} is not one of ${CONTENT_LAYER_MEDIA_TYPES.join(', ')}`,
    );
  }
  if (layer.diffId === '') {
    // An empty diff_id means "uncompressed": the digest is the diff_id. For a compressed blob that
    // would be a lie the client's unpack rejects, so say so now.
    if (layer.mediaType !== MediaType.ociLayer) {
      throw invalidArgument(
        `image spec: ${where}: diffId is required for a compressed layer (${layer.mediaType})`,
      );
    }
  } else {
    checkDigest(layer.diffId, `${where}.diffId`);
  }
  if (!Number.isSafeInteger(layer.size) || layer.size <= 0) {
    throw invalidArgument(
      `image spec: ${where}: size must be a positive integer, got ${JSON.stringify(layer.size)}`,
    );
  }
}
