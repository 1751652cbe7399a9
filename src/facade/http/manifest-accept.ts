// Which manifest a GET or HEAD of a hosted repository answers, given the request's Accept header:
// docker-registry 2.8's rules, so a client sees what it would see there. An OCI manifest or index is only
// served to a client that accepts its type (404 otherwise); a Docker type by digest is served whatever
// the Accept says (the digest names those bytes, nothing else can be served under it); by tag, a Docker
// schema 2 manifest the client does not accept would have to be rewritten as schema 1, which is not
// supported (400 MANIFEST_INVALID, as docker-registry without schema 1 answers), and a Docker manifest list
// stands for its linux/amd64 entry (what pre-list Docker clients pull). We keep one
// departure: no Accept, `*/*`, `application/*` or `application/json` accept anything (see negotiate.ts).
import { parseManifest } from '../../oci/manifest.ts';
import { MediaType } from '../../oci/media-types.ts';
import { accepts } from './negotiate.ts';
import { OciHttpError } from './oci-errors.ts';

export type ManifestChoice = 'stored' | 'platform-entry';

/** What to serve for a manifest stored as `mediaType`; throws the refusal when nothing can be. */
export function chooseManifest(
  accept: string | string[] | undefined,
  mediaType: string,
  byDigest: boolean,
): ManifestChoice {
  if (accepts(accept, mediaType)) return 'stored';
  const docker = mediaType === MediaType.dockerManifest || mediaType === MediaType.dockerManifestList;
  if (docker && byDigest) return 'stored';
  if (mediaType === MediaType.dockerManifestList) return 'platform-entry';
  if (mediaType === MediaType.dockerManifest) throw schema1Only();
  throw new OciHttpError(
    404,
    'MANIFEST_UNKNOWN',
    `the manifest is a ${mediaType}, which the Accept header does not include`,
  );
}

/**
 * The platform a Docker list stands for before a client that cannot read lists: docker-registry's fixed
 * default, whatever machine the registry runs on (the client's own platform is not in its request).
 */
const LIST_DEFAULT = { os: 'linux', architecture: 'amd64' };

/**
 * A Docker manifest list's linux/amd64 entry (os and architecture, as docker-registry matches them: the
 * first entry that names both), or undefined.
 */
export function platformEntry(list: Uint8Array): string | undefined {
  const parsed = parseManifest(list, MediaType.dockerManifestList);
  if (parsed.kind !== 'index') return undefined;
  return parsed.index.manifests.find(
    (m) => m.platform?.os === LIST_DEFAULT.os && m.platform.architecture === LIST_DEFAULT.architecture,
  )?.digest;
}

/** Throws when the list's entry chosen for a client is a schema 2 manifest that client does not accept. */
export function checkEntry(accept: string | string[] | undefined, mediaType: string): void {
  if (mediaType === MediaType.dockerManifest && !accepts(accept, mediaType)) throw schema1Only();
}

function schema1Only(): OciHttpError {
  return new OciHttpError(
    400,
    'MANIFEST_INVALID',
    'the manifest is a Docker schema 2 manifest, which the Accept header does not include, and schema 1 is not served',
  );
}
