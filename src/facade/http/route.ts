// Request paths of the facade: `/v2/`, `/v2/<prefix><provider>/<id>/manifests/<ref>`,
// `/v2/<prefix><provider>/<id>/blobs/<digest>` and `…/tags/list`, plus the operational endpoints. Repository names follow the
// distribution grammar; the prefix is a leading part of the name (e.g. `gitpod/`), not of the URL path.
import { isValidRepositoryPath, isValidTag, MAX_NAME_LENGTH } from '../../oci/reference.ts';
import type { FacadeName } from '../service.ts';
import { OciHttpError } from './oci-errors.ts';

export type Route =
  | { kind: 'base' }
  | { kind: 'manifest'; name: FacadeName; reference: string; repository: string }
  | { kind: 'blob'; name: FacadeName; digest: string; repository: string }
  | { kind: 'tags'; name: FacadeName; repository: string }
  | { kind: 'upload' | 'catalog'; repository?: string }
  | { kind: 'healthz' | 'readyz' | 'metrics' }
  | { kind: 'unknown' };

const NAMED = /^\/v2\/(.+)\/(manifests|blobs|tags)\/(.*)$/;
const DIGEST_SHAPE = /^[a-z0-9]+(?:[.+_-][a-z0-9]+)*:[a-zA-Z0-9=_-]+$/;

/** Checks and normalises a configured prefix: '' or path components ending in '/'. */
export function normalizePrefix(prefix: string): string {
  if (prefix === '') return '';
  const p = prefix.replace(/^\/+|\/+$/g, '');
  if (p === '' || !isValidRepositoryPath(p)) {
    throw new Error(`route prefix ${JSON.stringify(prefix)}: want lowercase path components like "gitpod/"`);
  }
  return `${p}/`;
}

export function parseRoute(pathname: string, prefix: string): Route {
  if (pathname === '/v2/' || pathname === '/v2') return { kind: 'base' };
  if (pathname === '/healthz') return { kind: 'healthz' };
  if (pathname === '/readyz') return { kind: 'readyz' };
  if (pathname === '/metrics') return { kind: 'metrics' };
  if (pathname === '/v2/_catalog') return { kind: 'catalog' };
  const m = NAMED.exec(pathname);
  if (!m) return { kind: 'unknown' };
  const repository = m[1]!;
  const what = m[2]!;
  const rest = m[3]!;
  if (what === 'tags') {
    return rest === 'list'
      ? { kind: 'tags', name: facadeName(repository, prefix), repository }
      : { kind: 'unknown' };
  }
  if (what === 'blobs' && (rest === 'uploads/' || rest.startsWith('uploads/')))
    return { kind: 'upload', repository };
  if (rest === '' || rest.includes('/')) return { kind: 'unknown' };
  const name = facadeName(repository, prefix);
  if (what === 'manifests') {
    if (!isValidTag(rest) && !DIGEST_SHAPE.test(rest)) {
      throw new OciHttpError(400, 'MANIFEST_INVALID', `invalid reference ${JSON.stringify(rest)}`);
    }
    return { kind: 'manifest', name, reference: rest, repository };
  }
  return { kind: 'blob', name, digest: rest, repository };
}

/** `<prefix><provider>/<id>` → provider and id; NAME_INVALID / NAME_UNKNOWN otherwise. */
export function facadeName(repository: string, prefix: string): FacadeName {
  if (repository.length > MAX_NAME_LENGTH || !isValidRepositoryPath(repository)) {
    throw new OciHttpError(
      400,
      'NAME_INVALID',
      `invalid repository name ${JSON.stringify(repository.slice(0, MAX_NAME_LENGTH))}`,
    );
  }
  if (!repository.startsWith(prefix)) {
    throw new OciHttpError(404, 'NAME_UNKNOWN', `repository ${repository} is not served here`);
  }
  const rest = repository.slice(prefix.length);
  const slash = rest.indexOf('/');
  if (slash <= 0) {
    throw new OciHttpError(404, 'NAME_UNKNOWN', `repository ${repository}: want ${prefix}<provider>/<id>`);
  }
  return { provider: rest.slice(0, slash), id: rest.slice(slash + 1) };
}
