// Image manifests, indexes (manifest lists) and image configs, OCI and Docker schema2: validation of
// untrusted bytes, and the canonical bytes we write. Parsed documents are the JSON objects themselves, so
// fields we do not know survive a parse and re-serialise. Digests are always of the original bytes.
import { invalidArgument } from '../errors.ts';
import { type Descriptor, isStringMap, isValidMediaType, parseDescriptor } from './descriptor.ts';
import { type Digest, parseDigest } from './digest.ts';
import { bareMediaType, isIndexType, isManifestType, isSchema1Type, MediaType } from './media-types.ts';

/** Registries refuse manifests above 4 MiB; so do we, before parsing. */
export const MAX_MANIFEST_BYTES = 4 * 1024 * 1024;
/** Configs are held in memory too; real ones are kilobytes, even with long histories. */
export const MAX_CONFIG_BYTES = 8 * 1024 * 1024;

export interface ImageManifest {
  schemaVersion: 2;
  mediaType?: string;
  config: Descriptor;
  layers: Descriptor[];
  subject?: Descriptor;
  annotations?: Record<string, string>;
  artifactType?: string;
  [k: string]: unknown;
}

export interface ImageIndex {
  schemaVersion: 2;
  mediaType?: string;
  manifests: Descriptor[];
  subject?: Descriptor;
  annotations?: Record<string, string>;
  artifactType?: string;
  [k: string]: unknown;
}

export interface ContainerConfig {
  Env?: string[];
  Entrypoint?: string[];
  Cmd?: string[];
  WorkingDir?: string;
  User?: string;
  Labels?: Record<string, string>;
  ExposedPorts?: Record<string, object>;
  Volumes?: Record<string, object>;
  StopSignal?: string;
  [k: string]: unknown;
}

export interface History {
  created?: string;
  created_by?: string;
  author?: string;
  comment?: string;
  empty_layer?: boolean;
  [k: string]: unknown;
}

export interface ImageConfig {
  architecture: string;
  os: string;
  variant?: string;
  'os.version'?: string;
  created?: string;
  author?: string;
  config?: ContainerConfig;
  rootfs: { type: 'layers'; diff_ids: Digest[] };
  history?: History[];
  [k: string]: unknown;
}

export type ParsedManifest =
  | { kind: 'manifest'; mediaType: string; manifest: ImageManifest }
  | { kind: 'index'; mediaType: string; index: ImageIndex };

type JsonObject = Record<string, unknown>;

function isObject(value: unknown): value is JsonObject {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

function decodeObject(bytes: Uint8Array, max: number, what: string): JsonObject {
  if (bytes.byteLength > max) {
    throw invalidArgument(`${what} is ${bytes.byteLength} bytes, more than the ${max} allowed`);
  }
  let text: string;
  try {
    text = new TextDecoder('utf-8', { fatal: true }).decode(bytes);
  } catch {
    throw invalidArgument(`${what} is not valid UTF-8`);
  }
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch (err) {
    throw invalidArgument(`${what} is not valid JSON: ${(err as Error).message}`);
  }
  if (!isObject(value)) throw invalidArgument(`${what} is not a JSON object`);
  return value;
}

// `application/json` is what old registries send for schema1, but also what a careless server sends for
// anything; only the schema1-specific types say schema1 by themselves.
function saysSchema1(mediaType: string): boolean {
  return isSchema1Type(mediaType) && bareMediaType(mediaType) !== 'application/json';
}

function checkOptional(doc: JsonObject, where: string): void {
  if (doc.subject !== undefined) parseDescriptor(doc.subject, `${where} subject`);
  if (doc.annotations !== undefined && !isStringMap(doc.annotations)) {
    throw invalidArgument(`${where}: annotations must map strings to strings`);
  }
  if (
    doc.artifactType !== undefined &&
    (typeof doc.artifactType !== 'string' || !isValidMediaType(doc.artifactType))
  ) {
    throw invalidArgument(`${where}: invalid artifactType ${JSON.stringify(doc.artifactType)}`);
  }
}

function descriptorList(value: unknown, field: string, where: string): void {
  if (!Array.isArray(value)) throw invalidArgument(`${where}: ${field} must be a list`);
  value.forEach((d, i) => {
    parseDescriptor(d, `${where} ${field}[${i}]`);
  });
}

function checkManifest(doc: JsonObject): ImageManifest {
  // A document that is both a manifest and an index could be read either way by different clients.
  if (doc.manifests !== undefined) throw invalidArgument('image manifest must not have a manifests field');
  if (doc.config === undefined) throw invalidArgument('image manifest has no config');
  parseDescriptor(doc.config, 'image manifest config');
  if (doc.layers === undefined) throw invalidArgument('image manifest has no layers');
  descriptorList(doc.layers, 'layers', 'image manifest');
  checkOptional(doc, 'image manifest');
  return doc as ImageManifest;
}

function checkIndex(doc: JsonObject): ImageIndex {
  if (doc.config !== undefined || doc.layers !== undefined) {
    throw invalidArgument('image index must not have config or layers fields');
  }
  if (doc.manifests === undefined) throw invalidArgument('image index has no manifests');
  descriptorList(doc.manifests, 'manifests', 'image index');
  checkOptional(doc, 'image index');
  return doc as ImageIndex;
}

/**
 * Validates a manifest or index. The media type comes from the body, else from `contentType`, else from
 * the shape of the document (an OCI index has `manifests`, an OCI manifest `config`).
 */
export function parseManifest(bytes: Uint8Array, contentType?: string): ParsedManifest {
  const doc = decodeObject(bytes, MAX_MANIFEST_BYTES, 'manifest');
  const header =
    contentType === undefined || contentType.trim() === '' ? undefined : bareMediaType(contentType);
  const body = doc.mediaType;
  if (body !== undefined && typeof body !== 'string')
    throw invalidArgument('manifest mediaType must be a string');

  if (doc.schemaVersion === 1 || (body !== undefined && saysSchema1(body))) {
    throw invalidArgument('schema1 manifests are not supported');
  }
  if (body === undefined && header !== undefined && saysSchema1(header)) {
    throw invalidArgument('schema1 manifests are not supported');
  }
  if (doc.schemaVersion !== 2) {
    throw invalidArgument(`unsupported manifest schemaVersion ${JSON.stringify(doc.schemaVersion)}`);
  }

  let mediaType: string;
  if (body !== undefined) {
    mediaType = bareMediaType(body);
    const headerNamesOne =
      header !== undefined && (isManifestType(header) || isIndexType(header) || saysSchema1(header));
    if (headerNamesOne && header !== mediaType) {
      throw invalidArgument(`manifest says it is ${body} but was served as ${contentType}`);
    }
  } else if (header !== undefined && (isManifestType(header) || isIndexType(header))) {
    mediaType = header;
  } else if (doc.manifests !== undefined) {
    mediaType = MediaType.ociIndex;
  } else if (doc.config !== undefined) {
    mediaType = MediaType.ociManifest;
  } else {
    throw invalidArgument('document is neither an image manifest nor an image index');
  }

  if (isManifestType(mediaType)) return { kind: 'manifest', mediaType, manifest: checkManifest(doc) };
  if (isIndexType(mediaType)) return { kind: 'index', mediaType, index: checkIndex(doc) };
  throw invalidArgument(`unsupported manifest media type ${JSON.stringify(body)}`);
}

function optionalString(obj: JsonObject, key: string, where: string): void {
  if (obj[key] !== undefined && typeof obj[key] !== 'string') {
    throw invalidArgument(`${where}: ${key} must be a string`);
  }
}

function isStringList(value: unknown): value is string[] {
  return Array.isArray(value) && value.every((x) => typeof x === 'string');
}

// Docker writes `null` for unset fields (`"Entrypoint": null`); null and absent mean the same, so the
// parsed config drops such nulls and its typed fields hold what their types say.
function dropNull(obj: JsonObject, key: string): void {
  if (obj[key] === null) delete obj[key];
}

function checkContainerConfig(c: JsonObject): void {
  const where = 'image config config';
  for (const key of ['Env', 'Entrypoint', 'Cmd']) {
    dropNull(c, key);
    if (c[key] !== undefined && !isStringList(c[key])) {
      throw invalidArgument(`${where}: ${key} must be a list of strings`);
    }
  }
  for (const key of ['WorkingDir', 'User', 'StopSignal']) {
    dropNull(c, key);
    optionalString(c, key, where);
  }
  dropNull(c, 'Labels');
  if (c.Labels !== undefined && !isStringMap(c.Labels)) {
    throw invalidArgument(`${where}: Labels must map strings to strings`);
  }
  for (const key of ['ExposedPorts', 'Volumes']) {
    dropNull(c, key);
    const set = c[key];
    if (set !== undefined && !(isObject(set) && Object.values(set).every(isObject))) {
      throw invalidArgument(`${where}: ${key} must map names to objects`);
    }
  }
}

/** Validates an image config (OCI or Docker): platform fields, rootfs.diff_ids, config and history. */
export function parseImageConfig(bytes: Uint8Array): ImageConfig {
  const doc = decodeObject(bytes, MAX_CONFIG_BYTES, 'image config');
  const where = 'image config';
  if (typeof doc.architecture !== 'string') throw invalidArgument(`${where}: architecture must be a string`);
  if (typeof doc.os !== 'string') throw invalidArgument(`${where}: os must be a string`);
  for (const key of ['variant', 'os.version', 'created', 'author']) optionalString(doc, key, where);
  if (doc['os.features'] !== undefined && !isStringList(doc['os.features'])) {
    throw invalidArgument(`${where}: os.features must be a list of strings`);
  }

  const rootfs = doc.rootfs;
  if (!isObject(rootfs)) throw invalidArgument(`${where}: rootfs missing or not an object`);
  if (rootfs.type !== 'layers') {
    throw invalidArgument(`${where}: rootfs.type must be "layers", not ${JSON.stringify(rootfs.type)}`);
  }
  if (!Array.isArray(rootfs.diff_ids)) throw invalidArgument(`${where}: rootfs.diff_ids must be a list`);
  rootfs.diff_ids.forEach((d: unknown, i) => {
    if (typeof d !== 'string') throw invalidArgument(`${where}: rootfs.diff_ids[${i}] must be a string`);
    try {
      parseDigest(d);
    } catch (err) {
      throw invalidArgument(`${where}: rootfs.diff_ids[${i}]: ${(err as Error).message}`);
    }
  });

  dropNull(doc, 'config');
  if (doc.config !== undefined) {
    if (!isObject(doc.config)) throw invalidArgument(`${where}: config must be an object`);
    checkContainerConfig(doc.config);
  }

  dropNull(doc, 'history');
  if (doc.history !== undefined) {
    if (!Array.isArray(doc.history)) throw invalidArgument(`${where}: history must be a list`);
    doc.history.forEach((h: unknown, i) => {
      const at = `${where} history[${i}]`;
      if (!isObject(h)) throw invalidArgument(`${at}: not an object`);
      for (const key of ['created', 'created_by', 'author', 'comment']) optionalString(h, key, at);
      if (h.empty_layer !== undefined && typeof h.empty_layer !== 'boolean') {
        throw invalidArgument(`${at}: empty_layer must be a boolean`);
      }
    });
  }
  return doc as ImageConfig;
}

/** The bytes we write for a document: compact JSON, keys in the order the object holds them. */
export function serializeJson(value: unknown): Uint8Array {
  const text = JSON.stringify(value);
  if (text === undefined) throw invalidArgument('value has no JSON form');
  return new TextEncoder().encode(text);
}
