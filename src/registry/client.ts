// The OCI distribution client: resolve, fetch and push manifests and blobs, list tags. Every byte read is
// checked against its digest; manifests are capped in size; blobs stream and resume after a dropped
// connection. Authorization (see auth.ts) and retries (see http.ts) happen below the operations.
import { pipeline, Readable } from 'node:stream';
import {
  dataLoss,
  errorKind,
  failedPrecondition,
  internal,
  invalidArgument,
  resourceExhausted,
  type StrataError,
} from '../errors.ts';
import type { Blob, OpenOptions } from '../oci/blob.ts';
import type { Descriptor } from '../oci/descriptor.ts';
import { algorithmOf, type Digest, digestOf, isDigest, VerifyingStream } from '../oci/digest.ts';
import { MAX_MANIFEST_BYTES, type ParsedManifest, parseManifest } from '../oci/manifest.ts';
import { bareMediaType, isIndexType, isManifestType, MANIFEST_ACCEPT } from '../oci/media-types.ts';
import { formatReference, type Reference, referenceTarget } from '../oci/reference.ts';
import { Authorizer } from './auth.ts';
import { findChallenge, parseChallenges } from './challenge.ts';
import { chunksOf } from './chunks.ts';
import { anonymous, type CredentialStore } from './credentials.ts';
import { type HostConfig, RegistryHosts } from './hosts.ts';
import {
  bodyError,
  discard,
  HttpClient,
  type HttpClientOptions,
  type HttpMethod,
  type HttpResponse,
  header,
  readCapped,
} from './http.ts';
import { nextLink } from './link.ts';
import {
  MAX_ERROR_BODY,
  parseErrorBody,
  type RegistryErrorEntry,
  registryError,
  saidIn,
  unauthorizedError,
} from './registry-errors.ts';
import { openBlobRange } from './resumable-read.ts';
import { isRetryableNetworkError } from './retry.ts';
import { mergeScopes, repositoryScope } from './scope.ts';

/** A repository in a registry: what blobs and tags belong to. A Reference is one. */
export interface Repository {
  domain: string;
  path: string;
}

export interface RegistryClientOptions extends HttpClientOptions {
  hosts?: HostConfig | RegistryHosts;
  credentials?: CredentialStore;
  tokenCacheSize?: number;
  /** How many times a dropped blob download is resumed (default 5). */
  resumeAttempts?: number;
}

export interface CallOptions {
  signal?: AbortSignal;
}

export interface FetchedManifest {
  bytes: Buffer;
  mediaType: string;
  digest: Digest;
  descriptor: Descriptor;
  parsed: ParsedManifest;
}

/** Bytes to upload: in memory, a stream (read once), or a function opening a fresh stream. */
export type BlobSource = Uint8Array | Readable | (() => Readable | Promise<Readable>);

export interface UploadOptions extends CallOptions {
  /** Upload in PATCH chunks of this many bytes instead of one PUT. */
  chunkSize?: number;
  /** Try a cross-repository mount from this repository (same registry) first. */
  mountFrom?: Repository;
  /** Check with HEAD whether the blob is already there first (default true). */
  skipExisting?: boolean;
}

export type UploadOutcome = 'exists' | 'mounted' | 'uploaded';

export interface ListTagsOptions extends CallOptions {
  /** Page size asked for with `n` (the registry may return fewer). */
  pageSize?: number;
  /** Stop after this many tags (default 100 000). */
  limit?: number;
}

interface RegistryRequest {
  method: HttpMethod;
  url: URL;
  headers?: Record<string, string>;
  body?: Uint8Array | string | Readable;
  idempotent?: boolean;
  scopes: string[];
  signal?: AbortSignal;
  what: string;
}

const MAX_TAG_PAGES = 10_000;
const OCTETS = 'application/octet-stream';

const pull = (repo: Repository): string => repositoryScope(repo.path, ['pull']);
const pushPull = (repo: Repository): string => repositoryScope(repo.path, ['pull', 'push']);

function isStream(body: unknown): body is Readable {
  return typeof body === 'object' && body !== null && 'pipe' in body;
}

export class RegistryClient {
  readonly hosts: RegistryHosts;
  readonly http: HttpClient;
  private readonly auth: Authorizer;
  private readonly resumeAttempts: number;

  constructor(options: RegistryClientOptions = {}) {
    this.hosts = options.hosts instanceof RegistryHosts ? options.hosts : new RegistryHosts(options.hosts);
    this.http = new HttpClient({ ...options, ca: options.ca ?? this.hosts.ca });
    this.auth = new Authorizer(this.http, {
      credentials: options.credentials ?? anonymous,
      tokenCacheSize: options.tokenCacheSize,
    });
    this.resumeAttempts = options.resumeAttempts ?? 5;
  }

  /** Closes pooled connections. */
  close(): Promise<void> {
    return this.http.close();
  }

  // ------------------------------------------------------------------------------------------------
  // plumbing

  private url(repo: Repository, suffix: string): URL {
    if (!repo.domain) throw invalidArgument(`repository ${repo.path} names no registry`);
    return new URL(`/v2/${repo.path}/${suffix}`, this.hosts.baseUrl(repo.domain));
  }

  /** GET /v2/ without credentials, to learn the registry's challenge. */
  private async probe(base: URL, signal?: AbortSignal): Promise<HttpResponse> {
    const url = new URL('/v2/', base);
    const res = await this.http.send({ method: 'GET', url, signal, what: `ping ${url.host}` });
    if (res.status === 401) this.auth.learn(url, res.headers['www-authenticate']);
    else if (res.status < 300) this.auth.learnOpen(url);
    return res;
  }

  /**
   * Sends a request with authorization. A 401 to a request sent without credentials is answered once
   * with them; a 401 to one sent with a token is answered once with a fresh token, carrying any scope an
   * insufficient_scope error names. So is a 403 that is an insufficient_scope error (see
   * insufficientScope), once.
   */
  private async send(req: RegistryRequest): Promise<HttpResponse> {
    const oneShot = isStream(req.body);
    if (oneShot && !this.auth.knows(req.url)) await discard((await this.probe(req.url, req.signal)).body);
    let scopes = req.scopes;
    let fresh = false;
    let retriedBare = false;
    let widened = false;
    for (;;) {
      const authorization = await this.auth.authorization(req.url, scopes, { fresh, signal: req.signal });
      const headers = { ...req.headers, ...(authorization ? { authorization } : {}) };
      const res = await this.http.send({ ...req, headers });
      // A 401 or 403 from where a redirect led (blob storage) says nothing about the registry's own auth.
      if (res.answeredBy.origin !== req.url.origin) return res;
      if (res.status === 403 && !oneShot && !widened) {
        const found = await this.insufficientScope(req.url, res, authorization !== undefined);
        if (!found.retry) return found.res;
        await discard(found.res.body);
        scopes = mergeScopes([...scopes, ...found.scopes]);
        fresh = true;
        widened = true;
        continue;
      }
      if (res.status !== 401) return res;
      const learned = this.auth.learn(req.url, res.headers['www-authenticate']);
      if (oneShot || !learned.retry || (authorization ? fresh : retriedBare)) return res;
      await discard(res.body);
      scopes = mergeScopes([...scopes, ...learned.scopes]);
      if (authorization) fresh = true;
      else retriedBare = true;
    }
  }

  /**
   * Whether a 403 is an insufficient_scope error, worth asking again with a token carrying the scopes its
   * challenge names. distribution and containerd only re-authorize on 401 (distribution's registry answers
   * a missing scope so), but RFC 6750 §3.1 has insufficient_scope answered with 403, and registries that
   * follow it say so in the Bearer challenge (`error="insufficient_scope"`) or only in the error body; like
   * go-containerregistry, a challenge on such an answer is taken up. Asked again when a challenge came or
   * a token was sent (a fresh one may carry what was granted since). The body, if read, is given back.
   */
  private async insufficientScope(
    url: URL,
    res: HttpResponse,
    sentToken: boolean,
  ): Promise<{ res: HttpResponse; retry: boolean; scopes: string[] }> {
    const header = res.headers['www-authenticate'];
    let said = findChallenge(parseChallenges(header), 'bearer')?.params.error === 'insufficient_scope';
    let kept = res;
    if (!said) {
      let bytes: Buffer = Buffer.alloc(0);
      try {
        bytes = await readCapped(res.body, MAX_ERROR_BODY, `${url.pathname}: error body`);
      } catch {
        res.body.destroy();
      }
      kept = { ...res, body: Readable.from([bytes], { objectMode: false }) };
      said = parseErrorBody(bytes).some((e) => e.code.toLowerCase() === 'insufficient_scope');
    }
    if (!said) return { res: kept, retry: false, scopes: [] };
    const learned = this.auth.learn(url, header);
    return { res: kept, retry: learned.retry || sentToken, scopes: learned.scopes };
  }

  /** The error for an unexpected answer, with the registry's own error code when its body has one. */
  private async fail(res: HttpResponse, what: string): Promise<StrataError> {
    let bytes: Buffer = Buffer.alloc(0);
    try {
      bytes = await readCapped(res.body, MAX_ERROR_BODY, what);
    } catch {
      res.body.destroy();
    }
    return this.answerError(res, parseErrorBody(bytes), what);
  }

  /**
   * The error for an answer (its body read or not). The registry's own 401, which send() already met
   * with whatever credentials there are, says whether there were any and were refused, naming the host.
   */
  private async answerError(
    res: HttpResponse,
    entries: readonly RegistryErrorEntry[],
    what: string,
  ): Promise<StrataError> {
    if (res.status !== 401 || res.answeredBy.origin !== res.url.origin)
      return registryError(res.status, entries, what, res.headers['retry-after']);
    const state = await this.auth.credentialsState(res.url);
    return unauthorizedError(what, res.url.host, state, `registry answered 401${saidIn(entries)}`);
  }

  // ------------------------------------------------------------------------------------------------
  // registry

  /**
   * Checks that the registry speaks the v2 API and that our credentials (if any) are accepted: a
   * challenged ping is repeated with a token of no scope, as `docker login` does.
   */
  async ping(domain: string, options: CallOptions = {}): Promise<void> {
    const base = this.hosts.baseUrl(domain);
    const first = await this.probe(base, options.signal);
    await discard(first.body);
    if (first.status === 200) return;
    const what = `ping ${domain}`;
    if (first.status !== 401) throw registryError(first.status, [], what);
    const res = await this.send({ method: 'GET', url: new URL('/v2/', base), scopes: [], what, ...options });
    if (res.status !== 200) throw await this.fail(res, what);
    await discard(res.body);
  }

  // ------------------------------------------------------------------------------------------------
  // manifests

  /**
   * The descriptor `ref` points at. HEAD first (digest, type and size from the headers); a GET, hashed
   * here, when the registry does not answer HEAD with a digest. A pinned digest must be what comes back.
   */
  async resolve(ref: Reference, options: CallOptions = {}): Promise<Descriptor> {
    const what = `resolve ${formatReference(ref)}`;
    const url = this.url(ref, `manifests/${referenceTarget(ref)}`);
    const res = await this.send({
      method: 'HEAD',
      url,
      headers: { accept: MANIFEST_ACCEPT.join(', ') },
      scopes: [pull(ref)],
      signal: options.signal,
      what,
    });
    await discard(res.body);
    if (res.status === 200) {
      const dcd = header(res, 'docker-content-digest');
      const type = header(res, 'content-type');
      const length = Number(header(res, 'content-length') ?? Number.NaN);
      if (dcd !== undefined && isDigest(dcd) && type && (isManifestType(type) || isIndexType(type))) {
        if (ref.digest !== undefined && dcd !== ref.digest) {
          throw dataLoss(`${what}: registry says ${dcd} for ${ref.digest}`);
        }
        if (Number.isSafeInteger(length) && length > 0) {
          if (length > MAX_MANIFEST_BYTES) {
            throw resourceExhausted(`${what}: manifest of ${length} bytes exceeds ${MAX_MANIFEST_BYTES}`);
          }
          return { mediaType: bareMediaType(type), digest: dcd, size: length };
        }
      }
    } else if (res.status !== 405) {
      throw await this.answerError(res, [], what);
    }
    return (await this.fetchManifest(ref, options)).descriptor;
  }

  /**
   * Fetches a manifest or index (at most MAX_MANIFEST_BYTES) by the reference's tag or digest, or by
   * `descriptor` within the reference's repository. The bytes must hash to the digest asked for; by
   * tag, to the Docker-Content-Digest the registry sent, if any.
   */
  async fetchManifest(
    ref: Reference,
    options: CallOptions & { descriptor?: Descriptor } = {},
  ): Promise<FetchedManifest> {
    const desc = options.descriptor;
    const expected = desc?.digest ?? ref.digest;
    const target = expected ?? referenceTarget(ref);
    const what = `fetch manifest ${formatReference(desc ? { ...ref, tag: undefined, digest: desc.digest } : ref)}`;
    if (desc && desc.size > MAX_MANIFEST_BYTES) {
      throw resourceExhausted(`${what}: manifest of ${desc.size} bytes exceeds ${MAX_MANIFEST_BYTES}`);
    }
    const url = this.url(ref, `manifests/${target}`);
    const accept =
      desc && !MANIFEST_ACCEPT.includes(bareMediaType(desc.mediaType))
        ? [desc.mediaType, ...MANIFEST_ACCEPT]
        : MANIFEST_ACCEPT;
    const req: RegistryRequest = {
      method: 'GET',
      url,
      headers: { accept: accept.join(', ') },
      scopes: [pull(ref)],
      signal: options.signal,
      what,
    };
    let bytes: Buffer | undefined;
    let res: HttpResponse | undefined;
    for (let attempt = 1; bytes === undefined; attempt++) {
      res = await this.send(req);
      if (res.status !== 200) throw await this.fail(res, what);
      const length = Number(header(res, 'content-length') ?? Number.NaN);
      if (length > MAX_MANIFEST_BYTES) {
        res.body.destroy();
        throw resourceExhausted(`${what}: manifest of ${length} bytes exceeds ${MAX_MANIFEST_BYTES}`);
      }
      try {
        bytes = await readCapped(res.body, MAX_MANIFEST_BYTES, what);
      } catch (err) {
        // A body broken off mid-way is worth asking for again; a too-large one is not.
        if (errorKind(err) !== undefined) throw err;
        if (
          attempt >= this.http.retry.attempts ||
          options.signal?.aborted ||
          !isRetryableNetworkError(err, true)
        ) {
          throw bodyError(err, req);
        }
      }
    }
    if (!res) throw internal(`${what}: no response`);
    const dcd = header(res, 'docker-content-digest');
    let digest: Digest;
    if (expected !== undefined) {
      digest = digestOf(bytes, algorithmOf(expected));
      if (digest !== expected) throw dataLoss(`${what}: content has digest ${digest}, not ${expected}`);
      if (desc && bytes.length !== desc.size) {
        throw dataLoss(`${what}: got ${bytes.length} bytes, descriptor says ${desc.size}`);
      }
    } else if (dcd !== undefined && isDigest(dcd)) {
      digest = digestOf(bytes, algorithmOf(dcd));
      if (digest !== dcd) throw dataLoss(`${what}: content has digest ${digest}, registry says ${dcd}`);
    } else {
      digest = digestOf(bytes);
    }
    const parsed = parseManifest(bytes, header(res, 'content-type'));
    const descriptor: Descriptor = { mediaType: parsed.mediaType, digest, size: bytes.length };
    return { bytes, mediaType: parsed.mediaType, digest, descriptor, parsed };
  }

  /**
   * Stores a manifest under the reference's tag or digest. With a digest, the bytes must have it. The
   * Docker-Content-Digest the registry answers must be the digest of the bytes sent.
   */
  async putManifest(
    ref: Reference,
    bytes: Uint8Array,
    mediaType: string,
    options: CallOptions = {},
  ): Promise<Descriptor> {
    const what = `push manifest ${formatReference(ref)}`;
    if (bytes.byteLength > MAX_MANIFEST_BYTES) {
      throw invalidArgument(`${what}: ${bytes.byteLength} bytes exceed ${MAX_MANIFEST_BYTES}`);
    }
    const target = ref.digest ?? ref.tag;
    if (target === undefined) throw invalidArgument(`${what}: a tag or digest is needed`);
    const digest = digestOf(bytes, ref.digest ? algorithmOf(ref.digest) : 'sha256');
    if (ref.digest !== undefined && digest !== ref.digest) {
      throw invalidArgument(`${what}: the manifest's digest is ${digest}`);
    }
    const res = await this.send({
      method: 'PUT',
      url: this.url(ref, `manifests/${target}`),
      headers: { 'content-type': mediaType },
      body: bytes,
      // Putting the same bytes twice leaves the same state.
      idempotent: true,
      scopes: [pushPull(ref)],
      signal: options.signal,
      what,
    });
    if (res.status !== 201 && res.status !== 200) throw await this.fail(res, what);
    await discard(res.body);
    const dcd = header(res, 'docker-content-digest');
    if (dcd !== undefined && isDigest(dcd) && digestOf(bytes, algorithmOf(dcd)) !== dcd) {
      throw dataLoss(`${what}: registry stored ${dcd}, the manifest sent is ${digestOf(bytes)}`);
    }
    return { mediaType: bareMediaType(mediaType), digest, size: bytes.byteLength };
  }

  // ------------------------------------------------------------------------------------------------
  // blobs

  /** Whether the repository has the blob (HEAD). */
  async blobExists(repo: Repository, digest: Digest, options: CallOptions = {}): Promise<boolean> {
    const what = `check blob ${digest} in ${repo.domain}/${repo.path}`;
    const res = await this.send({
      method: 'HEAD',
      url: this.url(repo, `blobs/${digest}`),
      scopes: [pull(repo)],
      signal: options.signal,
      what,
    });
    await discard(res.body);
    if (res.status === 200) return true;
    if (res.status === 404) return false;
    throw await this.answerError(res, [], what);
  }

  /** The blob as the one blob abstraction: `open` fetches (a range of) it from the registry. */
  blob(repo: Repository, desc: Descriptor): Blob {
    return { descriptor: desc, open: (o) => this.fetchBlob(repo, desc, o) };
  }

  /**
   * Streams a blob, or a range of it. Full reads are verified against the descriptor's digest and size
   * (the stream fails with DataLoss at the end otherwise). Redirects to storage are followed without our
   * Authorization; a dropped connection is resumed with Range. `verify: false` is for callers that hash
   * the bytes themselves anyway (a content store commit checks size and digest), so they are hashed once.
   */
  fetchBlob(repo: Repository, desc: Descriptor, options: OpenOptions = {}): Promise<Readable> {
    const what = `fetch blob ${desc.digest} from ${repo.domain}/${repo.path}`;
    const url = this.url(repo, `blobs/${desc.digest}`);
    return openBlobRange({
      url,
      desc,
      options,
      what,
      maxResumes: this.resumeAttempts,
      get: (headers) =>
        this.send({ method: 'GET', url, headers, scopes: [pull(repo)], signal: options.signal, what }),
      fail: (res) => this.fail(res, what),
    });
  }

  /**
   * Pushes a blob: nothing when the registry has it, a cross-repository mount when `mountFrom` is given
   * and the registry agrees (201), else an upload (monolithic, or chunked with `chunkSize`). The bytes
   * are verified while they are sent, so a wrong source never completes an upload.
   */
  async uploadBlob(
    repo: Repository,
    desc: Descriptor,
    source: BlobSource,
    options: UploadOptions = {},
  ): Promise<UploadOutcome> {
    const what = `push blob ${desc.digest} to ${repo.domain}/${repo.path}`;
    const signal = options.signal;
    if (options.skipExisting !== false && (await this.blobExists(repo, desc.digest, { signal }))) {
      if (isStream(source)) source.destroy();
      return 'exists';
    }
    const mountFrom =
      options.mountFrom && options.mountFrom.domain === repo.domain ? options.mountFrom : undefined;
    const start = await this.startUpload(repo, desc, mountFrom, what, signal);
    if (start.mounted) {
      if (isStream(source)) source.destroy();
      return 'mounted';
    }
    let location = start.location;
    let input: Readable | undefined;
    try {
      input = isStream(source) ? source : typeof source === 'function' ? await source() : undefined;
      let res: HttpResponse;
      if (options.chunkSize !== undefined) {
        if (!Number.isSafeInteger(options.chunkSize) || options.chunkSize <= 0) {
          throw invalidArgument(`${what}: invalid chunk size ${options.chunkSize}`);
        }
        const verified = this.verified(input, source, desc);
        let offset = 0;
        for await (const chunk of chunksOf(verified, options.chunkSize)) {
          const patch = await this.send({
            method: 'PATCH',
            url: location,
            headers: {
              'content-type': OCTETS,
              'content-range': `${offset}-${offset + chunk.length - 1}`,
              'content-length': String(chunk.length),
            },
            body: chunk,
            idempotent: false,
            scopes: [pushPull(repo)],
            signal,
            what,
          });
          if (patch.status !== 202) throw await this.fail(patch, what);
          await discard(patch.body);
          location = this.nextLocation(patch, location, what);
          offset += chunk.length;
        }
        res = await this.send({
          method: 'PUT',
          url: withDigest(location, desc.digest),
          headers: { 'content-length': '0' },
          scopes: [pushPull(repo)],
          signal,
          what,
        });
      } else {
        const body = this.verified(input, source, desc);
        res = await this.send({
          method: 'PUT',
          url: withDigest(location, desc.digest),
          headers: { 'content-type': OCTETS, 'content-length': String(desc.size) },
          body,
          idempotent: !input,
          scopes: [pushPull(repo)],
          signal,
          what,
        });
      }
      if (res.status === 404 && (await this.blobExists(repo, desc.digest, { signal }))) {
        // A retried PUT whose first attempt committed (its answer lost) finds the session used up.
        await discard(res.body);
        return 'uploaded';
      }
      if (res.status !== 201) throw await this.fail(res, what);
      await discard(res.body);
      const dcd = header(res, 'docker-content-digest');
      if (dcd !== undefined && dcd !== desc.digest) throw dataLoss(`${what}: registry stored ${dcd}`);
      return 'uploaded';
    } catch (err) {
      if (isStream(source)) source.destroy();
      input?.destroy();
      await this.cancelUpload(location, repo);
      throw err;
    }
  }

  /** Mounts a blob from another repository of the same registry; false when the registry declines. */
  async mountBlob(
    repo: Repository,
    from: Repository,
    desc: Descriptor,
    options: CallOptions = {},
  ): Promise<boolean> {
    if (from.domain !== repo.domain) return false;
    const what = `mount blob ${desc.digest} from ${from.path} into ${repo.domain}/${repo.path}`;
    const start = await this.startUpload(repo, desc, from, what, options.signal);
    if (start.mounted) return true;
    await this.cancelUpload(start.location, repo);
    return false;
  }

  private async startUpload(
    repo: Repository,
    desc: Descriptor,
    mountFrom: Repository | undefined,
    what: string,
    signal: AbortSignal | undefined,
  ): Promise<{ mounted: true } | { mounted: false; location: URL }> {
    const url = this.url(repo, 'blobs/uploads/');
    const scopes = [pushPull(repo)];
    if (mountFrom) {
      url.searchParams.set('mount', desc.digest);
      url.searchParams.set('from', mountFrom.path);
      scopes.push(pull(mountFrom));
    }
    const res = await this.send({
      method: 'POST',
      url,
      headers: { 'content-length': '0' },
      // Starting an upload twice only leaves an unused session behind.
      idempotent: true,
      scopes,
      signal,
      what,
    });
    if (res.status === 201 && mountFrom) {
      await discard(res.body);
      return { mounted: true };
    }
    if (mountFrom && (res.status === 401 || res.status === 403)) {
      // Distribution wants pull on the source for a mount and refuses the whole POST without it; that
      // declines the mount, not the push (containerd uploads then too).
      await discard(res.body);
      return this.startUpload(repo, desc, undefined, what, signal);
    }
    if (res.status !== 202) throw await this.fail(res, what);
    await discard(res.body);
    return { mounted: false, location: this.nextLocation(res, url, what) };
  }

  private nextLocation(res: HttpResponse, current: URL, what: string): URL {
    const location = header(res, 'location');
    if (!location) throw failedPrecondition(`${what}: the registry sent no upload Location`);
    try {
      return new URL(location, current);
    } catch {
      throw failedPrecondition(`${what}: bad upload Location ${JSON.stringify(location)}`);
    }
  }

  /** Best effort: an abandoned session would otherwise linger until the registry purges it. */
  private async cancelUpload(location: URL, repo: Repository): Promise<void> {
    try {
      const res = await this.send({
        method: 'DELETE',
        url: location,
        scopes: [pushPull(repo)],
        signal: AbortSignal.timeout(5_000),
        what: 'cancel upload',
      });
      await discard(res.body);
    } catch {
      // Nothing more to do.
    }
  }

  private verified(input: Readable | undefined, source: BlobSource, desc: Descriptor): Readable | Uint8Array {
    if (input) return pipelineTo(input, desc);
    const bytes = source as Uint8Array;
    if (bytes.byteLength !== desc.size || digestOf(bytes, algorithmOf(desc.digest)) !== desc.digest) {
      throw dataLoss(
        `push blob ${desc.digest}: the bytes given are not that content (${bytes.byteLength} bytes)`,
      );
    }
    return bytes;
  }

  // ------------------------------------------------------------------------------------------------
  // tags

  /** The repository's tags, following Link pagination (same registry only). */
  async listTags(repo: Repository, options: ListTagsOptions = {}): Promise<string[]> {
    const out: string[] = [];
    for await (const tag of this.tags(repo, options)) out.push(tag);
    return out;
  }

  async *tags(repo: Repository, options: ListTagsOptions = {}): AsyncGenerator<string> {
    const what = `list tags of ${repo.domain}/${repo.path}`;
    const limit = options.limit ?? 100_000;
    let url: URL | undefined = this.url(repo, 'tags/list');
    if (options.pageSize !== undefined) url.searchParams.set('n', String(options.pageSize));
    let count = 0;
    // A Link back to a page already read would repeat it (up to MAX_TAG_PAGES times) with its tags.
    const seen = new Set<string>();
    for (let page = 0; url && !seen.has(url.href) && page < MAX_TAG_PAGES; page++) {
      seen.add(url.href);
      const res = await this.send({ method: 'GET', url, scopes: [pull(repo)], signal: options.signal, what });
      if (res.status !== 200) throw await this.fail(res, what);
      const bytes = await readCapped(res.body, MAX_MANIFEST_BYTES, what);
      let tags: unknown;
      try {
        tags = (JSON.parse(bytes.toString('utf8')) as { tags?: unknown }).tags;
      } catch {
        throw invalidArgument(`${what}: the answer is not JSON`);
      }
      if (
        tags !== null &&
        tags !== undefined &&
        (!Array.isArray(tags) || tags.some((t) => typeof t !== 'string'))
      ) {
        throw invalidArgument(`${what}: "tags" is not a list of strings`);
      }
      for (const tag of (tags as string[] | null | undefined) ?? []) {
        if (count++ >= limit) return;
        yield tag;
      }
      const next = nextLink(res.headers.link, url);
      url = next && next.origin === url.origin ? next : undefined;
    }
  }
}

/** The upload URL with `digest=` added to whatever state the registry keeps in its query. */
function withDigest(location: URL, digest: Digest): URL {
  const u = new URL(location);
  u.searchParams.set('digest', digest);
  return u;
}

function pipelineTo(input: Readable, desc: Descriptor): Readable {
  return pipeline(input, new VerifyingStream(desc.digest, desc.size), () => {});
}
