// Content descriptors (OCI image spec, descriptor.md) and the platform they may name.
import { invalidArgument } from '../errors.ts';
import { algorithmOf, type Digest, digestOf, parseDigest } from './digest.ts';

export interface Platform {
  architecture: string;
  os: string;
  'os.version'?: string;
  'os.features'?: string[];
  variant?: string;
  features?: string[];
}

export interface Descriptor {
  mediaType: string;
  digest: Digest;
  size: number;
  urls?: string[];
  annotations?: Record<string, string>;
  platform?: Platform;
  artifactType?: string;
  data?: string;
  [unknown: string]: unknown;
}

const MEDIA_TYPE_RE = /^[A-Za-z0-9][A-Za-z0-9!#$&^_.+-]{0,126}\/[A-Za-z0-9][A-Za-z0-9!#$&^_.+-]{0,126}$/;

export function isValidMediaType(mt: string): boolean {
  return MEDIA_TYPE_RE.test(mt);
}

/** Validates an untrusted value as a descriptor; `where` names it in error messages. */
export function parseDescriptor(value: unknown, where = 'descriptor'): Descriptor {
  if (typeof value !== 'object' || value === null || Array.isArray(value)) {
    throw invalidArgument(`${where}: not an object`);
  }
  const v = value as Record<string, unknown>;
  if (typeof v.mediaType !== 'string' || !isValidMediaType(v.mediaType)) {
    throw invalidArgument(`${where}: invalid mediaType ${JSON.stringify(v.mediaType)}`);
  }
  if (typeof v.digest !== 'string') throw invalidArgument(`${where}: missing digest`);
  try {
    parseDigest(v.digest);
  } catch (err) {
    throw invalidArgument(`${where}: ${(err as Error).message}`);
  }
  if (typeof v.size !== 'number' || !Number.isSafeInteger(v.size) || v.size < 0) {
    throw invalidArgument(`${where}: invalid size ${JSON.stringify(v.size)}`);
  }
  if (v.urls !== undefined && (!Array.isArray(v.urls) || v.urls.some((u) => typeof u !== 'string'))) {
    throw invalidArgument(`${where}: urls must be a list of strings`);
  }
  if (v.annotations !== undefined && !isStringMap(v.annotations)) {
    throw invalidArgument(`${where}: annotations must map strings to strings`);
  }
  if (v.platform !== undefined) parsePlatformValue(v.platform, `${where}.platform`);
  if (
    v.artifactType !== undefined &&
    (typeof v.artifactType !== 'string' || !isValidMediaType(v.artifactType))
  ) {
    throw invalidArgument(`${where}: invalid artifactType ${JSON.stringify(v.artifactType)}`);
  }
  if (v.data !== undefined) checkEmbeddedData(v.data, v.digest as Digest, v.size, where);
  return v as Descriptor;
}

/** Validates an untrusted value as a platform object (the `platform` field of a descriptor). */
export function parsePlatformValue(value: unknown, where = 'platform'): Platform {
  if (typeof value !== 'object' || value === null || Array.isArray(value)) {
    throw invalidArgument(`${where}: not an object`);
  }
  const p = value as Record<string, unknown>;
  for (const key of ['architecture', 'os'] as const) {
    if (typeof p[key] !== 'string') throw invalidArgument(`${where}: ${key} must be a string`);
  }
  for (const key of ['variant', 'os.version'] as const) {
    if (p[key] !== undefined && typeof p[key] !== 'string') {
      throw invalidArgument(`${where}: ${key} must be a string`);
    }
  }
  for (const key of ['os.features', 'features'] as const) {
    const list = p[key];
    if (list !== undefined && (!Array.isArray(list) || list.some((x) => typeof x !== 'string'))) {
      throw invalidArgument(`${where}: ${key} must be a list of strings`);
    }
  }
  return p as unknown as Platform;
}

const BASE64_RE = /^(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?$/;

// Embedded data stands in for the blob, so it must be exactly the bytes the digest names.
function checkEmbeddedData(data: unknown, digest: Digest, size: number, where: string): void {
  if (typeof data !== 'string' || !BASE64_RE.test(data)) {
    throw invalidArgument(`${where}: data must be base64`);
  }
  const bytes = Buffer.from(data, 'base64');
  if (bytes.byteLength !== size) {
    throw invalidArgument(`${where}: data has ${bytes.byteLength} bytes, size says ${size}`);
  }
  if (digestOf(bytes, algorithmOf(digest)) !== digest) {
    throw invalidArgument(`${where}: data does not match digest ${digest}`);
  }
}

export function isStringMap(value: unknown): value is Record<string, string> {
  return (
    typeof value === 'object' &&
    value !== null &&
    !Array.isArray(value) &&
    Object.values(value).every((x) => typeof x === 'string')
  );
}
