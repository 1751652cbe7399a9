// Content descriptors (OCI image spec, descriptor.md) and the platform they may name.
import { invalidArgument } from '../errors.ts';
import { type Digest, parseDigest } from './digest.ts';

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
  return v as Descriptor;
}

export function isStringMap(value: unknown): value is Record<string, string> {
  return (
    typeof value === 'object' &&
    value !== null &&
    !Array.isArray(value) &&
    Object.values(value).every((x) => typeof x === 'string')
  );
}
