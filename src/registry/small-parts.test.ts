// Unit tests of the pure pieces: backoff and Retry-After, token expiry and cache bounds, scopes, Link
// headers, chunking, error mapping, and the rule that credentials never cross plain HTTP to another host.
import assert from 'node:assert/strict';
import { Readable } from 'node:stream';
import { test } from 'node:test';
import fc from 'fast-check';
import { errorKind } from '../errors.ts';
import { Authorizer } from './auth.ts';
import { chunksOf } from './chunks.ts';
import type { CredentialStore } from './credentials.ts';
import { HttpClient } from './http.ts';
import { nextLink } from './link.ts';
import { parseErrorBody, registryError } from './registry-errors.ts';
import {
  backoffDelay,
  DEFAULT_RETRY,
  isRetryableNetworkError,
  parseRetryAfter,
  retryDelay,
} from './retry.ts';
import { mergeScopes, repositoryScope } from './scope.ts';
import { TokenCache, tokenExpiry } from './token-cache.ts';

test('backoff: full jitter under an exponential ceiling, capped', () => {
  const p = { ...DEFAULT_RETRY, baseDelayMs: 100, maxDelayMs: 1000 };
  assert.equal(
    backoffDelay(p, 1, () => 0.999),
    99,
  );
  assert.equal(
    backoffDelay(p, 3, () => 0.5),
    200,
  );
  assert.equal(
    backoffDelay(p, 10, () => 0.999),
    999,
  );
  assert.equal(
    backoffDelay(p, 2, () => 0),
    0,
  );
  fc.assert(
    fc.property(
      fc.integer({ min: 1, max: 60 }),
      fc.double({ min: 0, max: 0.9999999, noNaN: true }),
      (n, r) => {
        const d = backoffDelay(p, n, () => r);
        assert.ok(d >= 0 && d < p.maxDelayMs);
      },
    ),
  );
});

test('Retry-After: seconds, HTTP dates, garbage; capped by the policy', () => {
  const now = Date.parse('2024-01-01T00:00:00Z');
  assert.equal(parseRetryAfter('3', now), 3000);
  assert.equal(parseRetryAfter('Mon, 01 Jan 2024 00:00:10 GMT', now), 10_000);
  assert.equal(parseRetryAfter('Sun, 31 Dec 2023 00:00:00 GMT', now), 0);
  assert.equal(parseRetryAfter('soon', now), undefined);
  assert.equal(parseRetryAfter('-1', now), undefined);
  assert.equal(parseRetryAfter(undefined, now), undefined);
  const p = { ...DEFAULT_RETRY, maxRetryAfterMs: 5000 };
  assert.equal(
    retryDelay(p, 1, '3600', () => 0.5, now),
    5000,
  );
  assert.equal(
    retryDelay(p, 1, '1', () => 0.5, now),
    1000,
  );
});

test('network errors: not-sent failures retry for any method, others only when idempotent', () => {
  const err = (code: string): Error => Object.assign(new Error(code), { code });
  assert.equal(isRetryableNetworkError(err('ECONNREFUSED'), false), true);
  assert.equal(isRetryableNetworkError(err('ECONNRESET'), false), false);
  assert.equal(isRetryableNetworkError(err('ECONNRESET'), true), true);
  assert.equal(isRetryableNetworkError(new Error('wrapped', { cause: err('UND_ERR_SOCKET') }), true), true);
  assert.equal(isRetryableNetworkError(err('ENOTFOUND'), true), false);
  assert.equal(isRetryableNetworkError(new Error('plain'), true), false);
});

test('token expiry: expires_in (60 s minimum and default), issued_at, clock skew', () => {
  const now = Date.parse('2024-01-01T00:10:00Z');
  // 300 s from now, less a 10 s margin.
  assert.equal(tokenExpiry(300, undefined, now), now + 290_000);
  // Missing or too short: 60 s, less 6 s.
  assert.equal(tokenExpiry(undefined, undefined, now), now + 54_000);
  assert.equal(tokenExpiry(10, 'garbage', now), now + 54_000);
  // Issued 100 s ago: that much less left.
  assert.equal(tokenExpiry(300, '2024-01-01T00:08:20Z', now), now + 190_000);
  // Issued in our future (server clock ahead): counted from now.
  assert.equal(tokenExpiry(300, '2024-01-01T01:00:00Z', now), now + 290_000);
  // Issued long before its lifetime (server clock far behind): our clock decides.
  assert.equal(tokenExpiry(60, '2023-01-01T00:00:00Z', now), now + 54_000);
});

test('token cache: expiry honoured, size bounded, least recently used evicted', () => {
  const cache = new TokenCache(2);
  cache.set('a', { token: 'A', expiresAt: 1000 });
  cache.set('b', { token: 'B', expiresAt: 1000 });
  assert.equal(cache.get('a', 999), 'A');
  cache.set('c', { token: 'C', expiresAt: 1000 });
  assert.equal(cache.size, 2);
  assert.equal(cache.get('b', 0), undefined);
  assert.equal(cache.get('a', 0), 'A');
  assert.equal(cache.get('a', 1000), undefined);
  assert.equal(cache.size, 1);
});

test('scopes merge per resource in a canonical order', () => {
  assert.equal(repositoryScope('a/b', ['pull', 'push']), 'repository:a/b:pull,push');
  assert.deepEqual(
    mergeScopes(['repository:b:push', 'repository:a:pull', 'repository:b:pull', 'junk', 'repository:a:pull']),
    ['repository:a:pull', 'repository:b:pull,push'],
  );
  assert.deepEqual(mergeScopes(['registry:catalog:*']), ['registry:catalog:*']);
});

test('Link headers: next page, relative or absolute, other rels ignored', () => {
  const base = new URL('http://r:5000/v2/x/tags/list?n=2');
  assert.equal(
    nextLink('</v2/x/tags/list?last=b&n=2>; rel="next"', base)?.href,
    'http://r:5000/v2/x/tags/list?last=b&n=2',
  );
  assert.equal(nextLink('<http://o/p>; rel=next', base)?.href, 'http://o/p');
  assert.equal(nextLink('</a>; rel="prev", </b>; rel="next"', base)?.pathname, '/b');
  assert.equal(nextLink('</a>; rel="prev"', base), undefined);
  assert.equal(nextLink(undefined, base), undefined);
  assert.equal(nextLink('garbage', base), undefined);
});

test('chunksOf cuts streams and buffers into fixed-size chunks', async () => {
  await fc.assert(
    fc.asyncProperty(
      fc.array(fc.uint8Array({ maxLength: 50 }), { maxLength: 10 }),
      fc.integer({ min: 1, max: 40 }),
      async (parts, size) => {
        const all = Buffer.concat(parts.map((p) => Buffer.from(p)));
        for (const source of [Readable.from(parts.map((p) => Buffer.from(p))), all]) {
          const got: Buffer[] = [];
          for await (const c of chunksOf(source, size)) got.push(c);
          assert.ok(Buffer.concat(got).equals(all));
          assert.ok(got.slice(0, -1).every((c) => c.length === size));
          assert.ok(got.every((c) => c.length > 0 && c.length <= size));
        }
      },
    ),
  );
});

test('registry errors map to the taxonomy and name the code', () => {
  const body = (code: string): ReturnType<typeof parseErrorBody> =>
    parseErrorBody(JSON.stringify({ errors: [{ code, message: 'm', detail: { x: 1 } }] }));
  const cases: Array<[number, string, string]> = [
    [401, 'UNAUTHORIZED', 'Unauthenticated'],
    [403, 'DENIED', 'PermissionDenied'],
    [404, 'MANIFEST_UNKNOWN', 'NotFound'],
    [404, 'BLOB_UNKNOWN', 'NotFound'],
    [404, 'NAME_UNKNOWN', 'NotFound'],
    [429, 'TOOMANYREQUESTS', 'ResourceExhausted'],
    [503, 'UNAVAILABLE', 'Unavailable'],
    [500, 'UNKNOWN', 'Unavailable'],
    [400, 'DIGEST_INVALID', 'DataLoss'],
    [400, 'MANIFEST_INVALID', 'InvalidArgument'],
    [400, 'MANIFEST_BLOB_UNKNOWN', 'FailedPrecondition'],
    [405, 'UNSUPPORTED', 'Unimplemented'],
  ];
  for (const [status, code, want] of cases) {
    const err = registryError(status, body(code), 'fetch manifest r/x:1');
    assert.equal(errorKind(err), want, `${status} ${code}`);
    assert.match(err.message, new RegExp(`^fetch manifest r/x:1: registry answered ${status} ${code}: m$`));
  }
  assert.equal(errorKind(registryError(404, [], 'x')), 'NotFound');
  assert.deepEqual(parseErrorBody('not json'), []);
  assert.deepEqual(parseErrorBody('{"errors":[{"nocode":1}, 3, null]}'), []);
});

test('credentials are never looked up for plain HTTP to another machine', async () => {
  const asked: string[] = [];
  const store: CredentialStore = {
    get: async (host) => {
      asked.push(host);
      return { kind: 'basic', username: 'u', password: 'p' };
    },
  };
  const http = new HttpClient();
  try {
    const auth = new Authorizer(http, { credentials: store });
    const remote = new URL('http://reg.lan:5000/v2/x/manifests/1');
    auth.learn(remote, 'Basic realm="r"');
    assert.equal(await auth.authorization(remote, []), undefined);
    const tls = new URL('https://reg.lan/v2/x/manifests/1');
    auth.learn(tls, 'Basic realm="r"');
    assert.equal(await auth.authorization(tls, []), `Basic ${Buffer.from('u:p').toString('base64')}`);
    const local = new URL('http://127.0.0.1:5000/v2/');
    auth.learn(local, 'Basic realm="r"');
    assert.ok(await auth.authorization(local, []));
    assert.deepEqual(asked, ['reg.lan', '127.0.0.1:5000']);
    // Nor to explain a 401: such a registry is told to be reached over HTTPS.
    assert.equal(await auth.credentialsState(remote), 'plain-http');
    assert.equal(await auth.credentialsState(tls), 'refused');
    assert.deepEqual(asked, ['reg.lan', '127.0.0.1:5000', 'reg.lan']);
  } finally {
    await http.close();
  }
});
