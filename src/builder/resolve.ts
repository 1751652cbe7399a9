// Image references to the digest form a build pins: normalised (Docker Hub names get their domain and
// `library/`, no tag means `latest`, a tag beside a digest is dropped), resolved with a HEAD (GET when the
// registry says nothing useful), and an index narrowed to the configured platform, so the result names
// one image manifest: `<domain>/<path>@<digest>`. Errors keep the anchor's gRPC codes and messages.
import {
  errorKind,
  internal,
  invalidArgument,
  messageOf,
  notFound,
  type StrataError,
  unauthenticated,
  unavailable,
} from '../errors.ts';
import type { Platform } from '../oci/descriptor.ts';
import { isIndexType } from '../oci/media-types.ts';
import { bestPlatformMatch, formatPlatform } from '../oci/platform.ts';
import { parseNormalizedReference, type Reference, withDefaultTag } from '../oci/reference.ts';
import type { RegistryClient } from '../registry/client.ts';

/** Parses and normalises a reference; a bad one is InvalidArgument with the anchor's wording. */
export function normalizeImageRef(ref: string): Reference {
  try {
    const r = withDefaultTag(parseNormalizedReference(ref.trim()));
    if (r.digest !== undefined) delete r.tag;
    return r;
  } catch (err) {
    throw invalidArgument(`cannot resolve base image ref: ${messageOf(err)}`, { cause: err });
  }
}

/** The digest form of `ref` for `platform` (a pinned index is narrowed too, as the anchor does). */
export async function resolveImage(
  client: RegistryClient,
  ref: string,
  platform: Platform,
  signal?: AbortSignal,
): Promise<string> {
  const r = normalizeImageRef(ref);
  try {
    const desc = await client.resolve(r, { signal });
    let digest = desc.digest;
    if (isIndexType(desc.mediaType)) {
      const { parsed } = await client.fetchManifest(r, { descriptor: desc, signal });
      if (parsed.kind !== 'index') throw internal(`${ref}: index expected`);
      const pick = bestPlatformMatch(platform, parsed.index.manifests);
      if (!pick) throw internal(`no manifest for platform ${formatPlatform(platform)} found`);
      digest = pick.digest;
    }
    return `${r.domain}/${r.path}@${digest}`;
  } catch (err) {
    throw resolveError(err);
  }
}

/** The anchor's mapping: not found, unauthorized, too many requests, everything else internal. */
export function resolveError(err: unknown): StrataError {
  switch (errorKind(err)) {
    case 'InvalidArgument':
      return err as StrataError;
    case 'NotFound':
      return notFound('cannot resolve image', { cause: err });
    case 'Unauthenticated':
      return unauthenticated('cannot resolve image', { cause: err });
    case 'ResourceExhausted':
      return unavailable(`upstream registry responds with 'too many request': ${messageOf(err)}`, {
        cause: err,
      });
    default:
      return internal(`cannot resolve image: ${messageOf(err)}`, { cause: err });
  }
}

/** Whether an image exists; any answer but "not there" is an error. */
export async function imageExists(
  client: RegistryClient,
  ref: string,
  signal?: AbortSignal,
): Promise<boolean> {
  try {
    await client.resolve(normalizeImageRef(ref), { signal });
    return true;
  } catch (err) {
    if (errorKind(err) === 'NotFound') return false;
    throw internal(`cannot check whether ${ref} exists: ${messageOf(err)}`, { cause: err });
  }
}
