// HTTP edge of the hosted repositories (src/hosted): the OCI distribution push and pull endpoints for
// every repository name outside the facade's `<prefix>remote/` and `<prefix>fixed/`. Statuses and codes
// are docker-registry's, as the differential test checks against a real one.
import type { IncomingMessage, ServerResponse } from 'node:http';
import {
  manifestTooLarge,
  RegistryError,
  type RegistryErrorCode,
  type RegistryErrorReason,
} from '../../hosted/errors.ts';
import { isRepository } from '../../hosted/names.ts';
import { checkRepository, type HostedRegistry, type StoredManifest } from '../../hosted/registry.ts';
import type { Descriptor } from '../../oci/descriptor.ts';
import { MAX_MANIFEST_BYTES } from '../../oci/manifest.ts';
import { MediaType } from '../../oci/media-types.ts';
import type { AuthNeed } from '../auth/client-auth.ts';
import { checkEntry, chooseManifest, platformEntry } from './manifest-accept.ts';
import { noneMatchHits } from './negotiate.ts';
import { OciHttpError } from './oci-errors.ts';
import type { RequestLog } from './request-log.ts';
import { type BlobSendOptions, sendBlob } from './send-blob.ts';
import { sendTags } from './send-tags.ts';

export type HostedRoute =
  | { kind: 'uploads'; repository: string }
  | { kind: 'upload'; repository: string; id: string }
  | { kind: 'blob'; repository: string; digest: string }
  | { kind: 'manifest'; repository: string; reference: string }
  | { kind: 'tags'; repository: string }
  | { kind: 'referrers'; repository: string; digest: string };

/** The provider keys whose names the facade composes; every other name is hosted. */
const FACADE_PROVIDERS = ['remote', 'fixed'];

const PATH =
  /^\/v2\/(.+)\/(?:blobs\/uploads\/([^/]*)|blobs\/([^/]+)|manifests\/([^/]+)|tags\/(list)|referrers\/([^/]+))$/;

/** The hosted route of a request path, or undefined when the path is the facade's (or no repository's). */
export function parseHostedRoute(pathname: string, prefix: string): HostedRoute | undefined {
  const m = PATH.exec(pathname);
  if (!m) return undefined;
  const repository = m[1]!;
  if (FACADE_PROVIDERS.some((p) => repository.startsWith(`${prefix}${p}/`))) return undefined;
  if (m[2] !== undefined)
    return m[2] === '' ? { kind: 'uploads', repository } : { kind: 'upload', repository, id: m[2] };
  if (m[3] !== undefined) return { kind: 'blob', repository, digest: m[3] };
  if (m[4] !== undefined) return { kind: 'manifest', repository, reference: m[4] };
  if (m[5] !== undefined) return { kind: 'tags', repository };
  return { kind: 'referrers', repository, digest: m[6]! };
}

/**
 * What the request needs to be allowed: its action on the repository, and for a cross-repository mount
 * also pull on the source repository (as distribution asks), since the mount reads that repository's blob.
 */
export function hostedNeeds(route: HostedRoute, method: string, url: string | undefined): AuthNeed[] {
  // A refusal's challenge names the repository: a name that is none is refused first, as serving it would
  // be (a header cannot carry every character a path can).
  try {
    checkRepository(route.repository);
  } catch (err) {
    throw ociErrorFrom(err);
  }
  // A push needs pull as well, as distribution asks (its uploads are read back: status, HEAD of blobs).
  const actions: ('pull' | 'push' | 'delete')[] =
    method === 'DELETE' ? ['delete'] : method === 'GET' || method === 'HEAD' ? ['pull'] : ['pull', 'push'];
  const needs: AuthNeed[] = actions.map((action) => ({ repository: route.repository, action }));
  if (route.kind === 'uploads' && method === 'POST') {
    const query = queryOf(url);
    const from = query.get('from');
    // An invalid source mounts nothing (the request becomes a plain upload), so it asks for nothing.
    if (query.get('mount') !== null && from !== null && isRepository(from) && from !== route.repository)
      needs.push({ repository: from, action: 'pull' });
  }
  return needs;
}

function queryOf(url: string | undefined): URLSearchParams {
  return new URLSearchParams((url ?? '').split('?')[1] ?? '');
}

/** docker-registry's statuses for the spec's codes. */
const STATUS: Record<RegistryErrorCode, number> = {
  BLOB_UNKNOWN: 404,
  BLOB_UPLOAD_INVALID: 400,
  BLOB_UPLOAD_UNKNOWN: 404,
  DIGEST_INVALID: 400,
  MANIFEST_BLOB_UNKNOWN: 400,
  MANIFEST_INVALID: 400,
  MANIFEST_UNKNOWN: 404,
  NAME_INVALID: 400,
  NAME_UNKNOWN: 404,
  SIZE_INVALID: 400,
  RANGE_INVALID: 416,
  UNSUPPORTED: 405,
};

/**
 * Statuses for what the code alone does not say: the spec's 413 for a manifest over the limit (docker-registry
 * answers 400 with the same code), and 507 Insufficient Storage for an upload the disk has no room for
 * (docker-registry: 500 UNKNOWN; clients show a 5xx by its status line, which then says why).
 */
const REASON_STATUS: Record<RegistryErrorReason, number> = { 'too-large': 413, 'no-space': 507 };

type Options = BlobSendOptions & { hosted: HostedRegistry };

export async function serveHosted(
  o: Options,
  req: IncomingMessage,
  res: ServerResponse,
  route: HostedRoute,
  signal: AbortSignal,
  log: RequestLog,
): Promise<void> {
  try {
    checkRepository(route.repository);
    await dispatch({ o, req, res, signal, log }, route);
  } catch (err) {
    // Whatever of the body was not read is discarded, so the connection can carry the error answer.
    if (!req.readableEnded) req.resume();
    throw ociErrorFrom(err);
  }
}

/** A hosted registry's refusal as its OCI answer; any other error as it is. */
function ociErrorFrom(err: unknown): unknown {
  if (!(err instanceof RegistryError)) return err;
  const status = err.reason === undefined ? STATUS[err.code] : REASON_STATUS[err.reason];
  return new OciHttpError(status, err.code, err.message, err.detail);
}

interface Call {
  o: Options;
  req: IncomingMessage;
  res: ServerResponse;
  signal: AbortSignal;
  log: RequestLog;
}

/** The methods of an upload (status, chunk, finish, cancel). */
const UPLOAD_METHODS = new Set(['GET', 'HEAD', 'PATCH', 'PUT', 'DELETE']);

async function dispatch({ o, req, res, signal, log }: Call, route: HostedRoute): Promise<void> {
  const method = req.method ?? 'GET';
  const query = queryOf(req.url);
  const repo = route.repository;
  const h = o.hosted;
  const unsupported = (allow: string) => {
    res.setHeader('allow', allow);
    return new OciHttpError(405, 'UNSUPPORTED', `${method} is not supported here`);
  };
  switch (route.kind) {
    case 'uploads': {
      // docker-registry routes these to an upload's handlers, which find no upload without an id.
      if (UPLOAD_METHODS.has(method))
        throw new RegistryError('BLOB_UPLOAD_UNKNOWN', `no upload of ${repo} is named without an id`);
      if (method !== 'POST') throw unsupported('POST');
      const mount = query.get('mount');
      if (mount !== null) {
        const desc = h.mountBlob(repo, mount, query.get('from') ?? undefined);
        if (desc) return created(res, blobLocation(repo, desc.digest), desc.digest);
      }
      const digest = query.get('digest');
      if (digest !== null && mount === null) {
        const desc = await h.putBlob(repo, digest, req);
        return created(res, blobLocation(repo, desc.digest), desc.digest);
      }
      req.resume();
      const up = await h.startUpload(repo);
      return uploadAnswer(res, 202, repo, up.id, up.offset);
    }
    case 'upload': {
      // HEAD as GET: docker-registry routes both to the upload's status.
      if (method === 'GET' || method === 'HEAD') {
        const up = await h.uploadStatus(repo, route.id);
        return uploadAnswer(res, 204, repo, up.id, up.offset);
      }
      if (method === 'PATCH') {
        const start = contentRangeStart(req.headers['content-range']);
        const up = await sayWhereOnRangeInvalid(
          h.appendUpload(repo, route.id, req, start),
          res,
          h,
          repo,
          route.id,
        );
        return uploadAnswer(res, 202, repo, up.id, up.offset);
      }
      if (method === 'PUT') {
        const digest = query.get('digest');
        if (digest === null)
          throw new RegistryError('DIGEST_INVALID', 'the digest query parameter is missing');
        // The last chunk may come with the PUT, and with its range.
        const start = contentRangeStart(req.headers['content-range']);
        const desc = await sayWhereOnRangeInvalid(
          h.finishUpload(repo, route.id, digest, req, start),
          res,
          h,
          repo,
          route.id,
        );
        return created(res, blobLocation(repo, desc.digest), desc.digest);
      }
      if (method === 'DELETE') {
        await h.cancelUpload(repo, route.id);
        return empty(res, 204, { 'docker-upload-uuid': route.id });
      }
      throw unsupported('GET, HEAD, PATCH, PUT, DELETE');
    }
    case 'blob': {
      if (method === 'DELETE') {
        h.deleteBlob(repo, route.digest);
        return empty(res, 202, {});
      }
      if (method !== 'GET' && method !== 'HEAD') throw unsupported('GET, HEAD, DELETE');
      log.digest = route.digest;
      const blob = h.blob(repo, route.digest);
      return sendBlob(
        o,
        req,
        res,
        { kind: 'blob', source: 'hosted', descriptor: blob.descriptor, blob },
        signal,
        log,
      );
    }
    case 'manifest':
      return serveManifest(o, req, res, route.repository, route.reference, log);
    case 'tags': {
      if (method !== 'GET' && method !== 'HEAD') throw unsupported('GET, HEAD');
      return sendTags(req, res, repo, await h.tags(repo));
    }
    case 'referrers': {
      if (method !== 'GET' && method !== 'HEAD') throw unsupported('GET, HEAD');
      const type = query.get('artifactType') ?? undefined;
      const manifests = await h.referrers(repo, route.digest, type);
      const body = JSON.stringify({ schemaVersion: 2, mediaType: MediaType.ociIndex, manifests });
      const headers: Record<string, string | number> = { 'content-type': MediaType.ociIndex };
      if (type !== undefined) headers['oci-filters-applied'] = 'artifactType';
      return send(res, method, 200, headers, body);
    }
  }
}

/** docker-registry's page of the catalog when `n` does not say, and the most it gives. */
const CATALOG_DEFAULT_N = 100;
export const CATALOG_MAX_N = 1000;

/**
 * `GET /v2/_catalog`: the hosted repositories, a page at a time (`n`, `last`), with a Link to the next page
 * when there is one (or may be: a page whose walk ran out of budget is shorter than `n`, as the
 * distribution spec allows, and its Link goes on from its last repository). `n` as docker-registry reads
 * it: missing, malformed or negative is the default, more than the maximum is refused.
 */
export async function serveCatalog(
  h: HostedRegistry,
  req: IncomingMessage,
  res: ServerResponse,
  signal?: AbortSignal,
): Promise<void> {
  const query = queryOf(req.url);
  let n = CATALOG_DEFAULT_N;
  const m = /^([+-]?)(\d{1,18})$/.exec(query.get('n') ?? '');
  if (m && !(m[1] === '-' && Number(m[2]) > 0)) {
    const asked = Number(m[2]);
    if (asked > CATALOG_MAX_N) {
      throw new OciHttpError(
        400,
        'PAGINATION_NUMBER_INVALID',
        `invalid number of results requested: at most ${CATALOG_MAX_N}`,
        { n: asked },
      );
    }
    n = asked;
  }
  const page = await h.catalog(n, query.get('last') ?? undefined, signal);
  const headers: Record<string, string> = { 'content-type': 'application/json; charset=utf-8' };
  const shown = page.repositories.at(-1);
  if (page.more && shown !== undefined) {
    headers.link = `</v2/_catalog?${new URLSearchParams({ last: shown, n: String(n) })}>; rel="next"`;
  }
  send(res, req.method ?? 'GET', 200, headers, JSON.stringify({ repositories: page.repositories }));
}

async function serveManifest(
  o: Options,
  req: IncomingMessage,
  res: ServerResponse,
  repo: string,
  reference: string,
  log: RequestLog,
): Promise<void> {
  const h = o.hosted;
  const method = req.method ?? 'GET';
  if (method === 'PUT') {
    const bytes = await readManifestBody(req, MAX_MANIFEST_BYTES);
    const m = await h.putManifest(repo, reference, bytes, header(req.headers['content-type']));
    log.digest = m.digest;
    const headers: Record<string, string> = {
      location: `/v2/${repo}/manifests/${m.digest}`,
      'docker-content-digest': m.digest,
    };
    if (m.subject) headers['oci-subject'] = m.subject;
    return empty(res, 201, headers);
  }
  if (method === 'DELETE') {
    await h.deleteManifest(repo, reference);
    return empty(res, 202, {});
  }
  if (method !== 'GET' && method !== 'HEAD') {
    res.setHeader('allow', 'GET, HEAD, PUT, DELETE');
    throw new OciHttpError(405, 'UNSUPPORTED', `${method} is not supported here`);
  }
  const accept = req.headers.accept;
  // HEAD reads the record only; GET reads the bytes once, for the answer.
  let m: StoredManifest | undefined = method === 'HEAD' ? undefined : await h.manifest(repo, reference);
  let d: Descriptor = m ? descriptorOf(m) : h.manifestDescriptor(repo, reference);
  // Before negotiation, as docker-registry: the client already holds what this reference names.
  if (noneMatchHits(req.headers['if-none-match'], d.digest)) {
    res.writeHead(304, { 'docker-content-digest': d.digest, etag: `"${d.digest}"` });
    res.end();
    return;
  }
  if (chooseManifest(accept, d.mediaType, reference.includes(':')) === 'platform-entry') {
    const entry = platformEntry((m ?? (await h.manifest(repo, reference))).bytes);
    if (entry === undefined) {
      throw new OciHttpError(404, 'MANIFEST_UNKNOWN', 'the manifest list has no entry for this platform');
    }
    m = await h.manifest(repo, entry);
    checkEntry(accept, m.mediaType);
    d = descriptorOf(m);
  }
  log.digest = d.digest;
  const headers = {
    'content-type': d.mediaType,
    'content-length': d.size,
    'docker-content-digest': d.digest,
    etag: `"${d.digest}"`,
  };
  if (!m) {
    res.writeHead(200, headers);
    res.end();
    return;
  }
  log.bytes = m.bytes.byteLength;
  o.metrics.bytesServed.inc({ source: 'manifest' }, m.bytes.byteLength);
  res.writeHead(200, headers);
  res.end(m.bytes);
}

function descriptorOf(m: StoredManifest): Descriptor {
  return { mediaType: m.mediaType, digest: m.digest, size: m.bytes.byteLength };
}

/**
 * The first offset of a PATCH's or closing PUT's `Content-Range: <first>-<last>`; undefined without the
 * header (a streamed chunk goes at the end). A malformed header is 416, as docker-registry answers it.
 */
function contentRangeStart(v: string | string[] | undefined): number | undefined {
  const s = header(v);
  if (s === undefined) return undefined;
  const m = /^(?:bytes[= ])?(\d{1,15})-(\d{1,15})(?:\/(?:\d+|\*))?$/.exec(s.trim());
  if (!m || Number(m[2]) < Number(m[1])) {
    throw new OciHttpError(416, 'BLOB_UPLOAD_INVALID', `invalid Content-Range ${JSON.stringify(s)}`);
  }
  return Number(m[1]);
}

function blobLocation(repo: string, digest: string): string {
  return `/v2/${repo}/blobs/${digest}`;
}

function created(res: ServerResponse, location: string, digest: string): void {
  empty(res, 201, { location, 'docker-content-digest': digest });
}

function uploadAnswer(res: ServerResponse, status: number, repo: string, id: string, offset: number): void {
  empty(res, status, uploadHeaders(repo, id, offset));
}

function uploadHeaders(repo: string, id: string, offset: number): Record<string, string> {
  return {
    location: `/v2/${repo}/blobs/uploads/${id}`,
    'docker-upload-uuid': id,
    range: `0-${Math.max(0, offset - 1)}`,
  };
}

/**
 * A chunk out of order is refused (416) with the headers of the upload's status, so the client can send
 * the right bytes next without asking where the upload stands (the spec has it ask with a GET).
 */
async function sayWhereOnRangeInvalid<T>(
  p: Promise<T>,
  res: ServerResponse,
  h: HostedRegistry,
  repo: string,
  id: string,
): Promise<T> {
  try {
    return await p;
  } catch (err) {
    if (err instanceof RegistryError && err.code === 'RANGE_INVALID') {
      const up = await h.uploadStatus(repo, id).catch(() => undefined);
      if (up) for (const [k, v] of Object.entries(uploadHeaders(repo, up.id, up.offset))) res.setHeader(k, v);
    }
    throw err;
  }
}

function empty(res: ServerResponse, status: number, headers: Record<string, string>): void {
  // A 204 has no Content-Length (RFC 9110 8.6; docker-registry sends none either).
  res.writeHead(status, status === 204 ? headers : { ...headers, 'content-length': 0 });
  res.end();
}

function send(
  res: ServerResponse,
  method: string,
  status: number,
  headers: Record<string, string | number>,
  body: string,
): void {
  res.writeHead(status, { ...headers, 'content-length': Buffer.byteLength(body) });
  res.end(method === 'HEAD' ? undefined : body);
}

function header(v: string | string[] | undefined): string | undefined {
  return Array.isArray(v) ? v[0] : v;
}

/**
 * A manifest's body, at most `limit` bytes (413 MANIFEST_INVALID beyond; at once when Content-Length says
 * so). Leaving the loop early must not destroy the request: that resets the connection, and the client
 * may get the reset instead of the answer. The rest of the body is drained instead (serveHosted), so the
 * connection carries the next request.
 */
async function readManifestBody(req: IncomingMessage, limit: number): Promise<Uint8Array> {
  if (Number(header(req.headers['content-length'])) > limit) throw manifestTooLarge(limit);
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const c of req.iterator({ destroyOnReturn: false }) as AsyncIterable<Buffer>) {
    size += c.byteLength;
    if (size > limit) throw manifestTooLarge(limit);
    chunks.push(c);
  }
  return Buffer.concat(chunks);
}
