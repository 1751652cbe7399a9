// Fault injection against in-process HTTP servers: retries, resumes, lying content, redirects, size caps,
// timeouts and aborts. Behaviour against a real registry is in test/integration/registry-client*.test.ts.
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import { Readable } from 'node:stream';
import { buffer } from 'node:stream/consumers';
import { after, test } from 'node:test';
import { waitFor, within } from '../../test/helpers/process.ts';
import { errorKind, retryAfterMsOf } from '../errors.ts';
import type { Descriptor } from '../oci/descriptor.ts';
import { digestOf } from '../oci/digest.ts';
import { MediaType } from '../oci/media-types.ts';
import type { Reference } from '../oci/reference.ts';
import { RegistryClient, type RegistryClientOptions } from './client.ts';
import { staticCredentials } from './credentials.ts';
import { type FaultHandler, type FaultServer, sendError, startFaultServer } from './testing/fault-server.ts';

const cleanups: Array<() => Promise<void>> = [];
after(async () => {
  for (const c of cleanups.reverse()) await c();
});

async function server(handler: FaultHandler): Promise<FaultServer> {
  const s = await startFaultServer(handler);
  cleanups.push(() => s.close());
  return s;
}

function client(options: RegistryClientOptions = {}): { c: RegistryClient; delays: number[] } {
  const delays: number[] = [];
  const c = new RegistryClient({
    retry: { attempts: 4, baseDelayMs: 100, maxDelayMs: 1000, maxRetryAfterMs: 5000 },
    sleep: async (ms) => {
      delays.push(ms);
    },
    random: () => 0.5,
    ...options,
  });
  cleanups.push(() => c.close());
  return { c, delays };
}

const manifestBytes = Buffer.from(
  JSON.stringify({
    schemaVersion: 2,
    mediaType: MediaType.ociManifest,
    config: { mediaType: MediaType.ociConfig, digest: digestOf('{}'), size: 2 },
    layers: [],
  }),
);
const manifestDigest = digestOf(manifestBytes);

function sendManifest(
  res: ServerResponse,
  bytes: Buffer = manifestBytes,
  headers: Record<string, string> = {},
): void {
  res.writeHead(200, {
    'content-type': MediaType.ociManifest,
    'content-length': bytes.length,
    'docker-content-digest': digestOf(bytes),
    ...headers,
  });
  res.end(bytes);
}

const ref = (host: string, extra: Partial<Reference> = {}): Reference => ({
  domain: host,
  path: 'team/app',
  tag: 'v1',
  ...extra,
});

const kind = (k: string) => (err: unknown) => {
  assert.equal(errorKind(err), k, String(err));
  return true;
};

// ---------------------------------------------------------------------------------------------------
// retries

test('429 with Retry-After, then 503, then success: retried with the asked pause, then backoff', async () => {
  const s = await server((_req, res, _b, n) => {
    if (n === 1) return sendError(res, 429, 'TOOMANYREQUESTS', 'slow down', { 'retry-after': '2' });
    if (n === 2) return sendError(res, 503, 'UNAVAILABLE', 'busy');
    sendManifest(res);
  });
  const { c, delays } = client();
  const got = await c.fetchManifest(ref(s.host));
  assert.equal(got.digest, manifestDigest);
  assert.equal(s.requests.length, 3);
  // Retry-After: 2 → 2000 ms; then full jitter with random 0.5 over min(1000, 100·2^1).
  assert.deepEqual(delays, [2000, 100]);
});

test('Retry-After as an HTTP date, and one beyond the cap', async () => {
  const soon = new Date(Date.now() + 60 * 60 * 1000).toUTCString();
  const s = await server((_req, res, _b, n) => {
    if (n === 1) return sendError(res, 429, 'TOOMANYREQUESTS', 'later', { 'retry-after': soon });
    sendManifest(res);
  });
  const { c, delays } = client();
  await c.fetchManifest(ref(s.host));
  assert.deepEqual(delays, [5000]);
});

test('retry budget exhausted: 429 → ResourceExhausted, 503 → Unavailable, attempts bounded', async () => {
  const s429 = await server((_req, res) => sendError(res, 429, 'TOOMANYREQUESTS', 'no'));
  const s503 = await server((_req, res) => sendError(res, 503, 'UNAVAILABLE', 'down'));
  const { c } = client();
  await assert.rejects(c.fetchManifest(ref(s429.host)), (err: Error) => {
    kind('ResourceExhausted')(err);
    assert.match(err.message, /team\/app:v1.*429 TOOMANYREQUESTS/);
    return true;
  });
  assert.equal(s429.requests.length, 4);
  await assert.rejects(c.resolve(ref(s503.host)), kind('Unavailable'));
  assert.equal(s503.requests.length, 4);
});

test("a rate limit that outlasts the retries keeps the registry's last Retry-After for the caller", async () => {
  const s = await server((_req, res) =>
    sendError(res, 429, 'TOOMANYREQUESTS', 'no', { 'retry-after': '42' }),
  );
  const { c } = client({ retry: { attempts: 2, maxRetryAfterMs: 1 } });
  const err = await c.fetchManifest(ref(s.host)).catch((e: unknown) => e);
  assert.equal(errorKind(err), 'ResourceExhausted');
  assert.equal(retryAfterMsOf(err), 42_000);
  // A refusal of another kind names no wait.
  const gone = await server((_req, res) => sendError(res, 404, 'MANIFEST_UNKNOWN', 'no'));
  assert.equal(retryAfterMsOf(await c.fetchManifest(ref(gone.host)).catch((e: unknown) => e)), undefined);
});

test('a connection reset before the answer is retried for GET', async () => {
  const s = await server((req, res, _b, n) => {
    if (n === 1) return req.socket.destroy();
    sendManifest(res);
  });
  const { c } = client();
  assert.equal((await c.fetchManifest(ref(s.host))).digest, manifestDigest);
  assert.equal(s.requests.length, 2);
});

test('a PATCH that fails is not repeated, and the upload session is cancelled', async () => {
  const data = randomBytes(1000);
  const desc: Descriptor = {
    mediaType: 'application/octet-stream',
    digest: digestOf(data),
    size: data.length,
  };
  const s = await server((req, res) => {
    if (req.method === 'HEAD') return sendError(res, 404, 'BLOB_UNKNOWN', 'no');
    if (req.method === 'POST') {
      res.writeHead(202, { location: '/v2/team/app/blobs/uploads/u1?_state=x', 'content-length': 0 });
      return res.end();
    }
    if (req.method === 'PATCH') return sendError(res, 503, 'UNAVAILABLE', 'busy');
    if (req.method === 'DELETE') {
      res.writeHead(204);
      return res.end();
    }
    sendError(res, 500, 'UNKNOWN', 'unexpected');
  });
  const { c } = client();
  await assert.rejects(c.uploadBlob(ref(s.host), desc, data, { chunkSize: 400 }), kind('Unavailable'));
  assert.deepEqual(
    s.requests.map((r) => r.method),
    ['HEAD', 'POST', 'PATCH', 'DELETE'],
  );
  assert.equal(s.requests[3]?.url, '/v2/team/app/blobs/uploads/u1?_state=x');
});

test('a completing PUT whose answer was lost is retried, and the 404 for the used session is not a failure', async () => {
  const data = randomBytes(1000);
  const desc: Descriptor = {
    mediaType: 'application/octet-stream',
    digest: digestOf(data),
    size: data.length,
  };
  let stored = false;
  const s = await server((req, res) => {
    if (req.method === 'HEAD') {
      if (!stored) return sendError(res, 404, 'BLOB_UNKNOWN', 'no');
      res.writeHead(200, { 'content-length': data.length, 'docker-content-digest': desc.digest });
      return res.end();
    }
    if (req.method === 'POST') {
      res.writeHead(202, { location: '/v2/team/app/blobs/uploads/u1', 'content-length': 0 });
      return res.end();
    }
    if (req.method === 'PUT') {
      // The first PUT commits the blob and ends the session, then the connection drops before the
      // answer; the registry knows no such session when the PUT comes again.
      if (stored) return sendError(res, 404, 'BLOB_UPLOAD_UNKNOWN', 'blob upload unknown to registry');
      stored = true;
      return req.socket.destroy();
    }
    if (req.method === 'DELETE') return sendError(res, 404, 'BLOB_UPLOAD_UNKNOWN', 'unknown');
    sendError(res, 500, 'UNKNOWN', 'unexpected');
  });
  const { c } = client();
  assert.equal(await c.uploadBlob(ref(s.host), desc, data), 'uploaded');
  assert.deepEqual(
    s.requests.map((r) => r.method),
    ['HEAD', 'POST', 'PUT', 'PUT', 'HEAD'],
  );
});

test('a registry without authentication is pinged once, not before every streamed upload', async () => {
  const s = await server((req, res) => {
    if (req.method === 'HEAD') return sendError(res, 404, 'BLOB_UNKNOWN', 'no');
    if (req.method === 'POST') {
      res.writeHead(202, { location: '/v2/team/app/blobs/uploads/u1', 'content-length': 0 });
      return res.end();
    }
    if (req.method === 'PUT') {
      const digest = new URL(req.url ?? '/', 'http://x').searchParams.get('digest') ?? '';
      res.writeHead(201, { 'docker-content-digest': digest, 'content-length': 0 });
      return res.end();
    }
    res.writeHead(200, { 'content-type': 'application/json', 'content-length': 2 });
    res.end('{}');
  });
  const { c } = client();
  for (let i = 0; i < 3; i++) {
    const data = randomBytes(100);
    const desc: Descriptor = { mediaType: 'application/octet-stream', digest: digestOf(data), size: 100 };
    assert.equal(await c.uploadBlob(ref(s.host), desc, Readable.from([data])), 'uploaded');
  }
  assert.equal(s.requests.filter((r) => r.url === '/v2/').length, 1);
});

// ---------------------------------------------------------------------------------------------------
// resumed blob downloads

function blobServer(
  data: Buffer,
  behaviour: (rangeStart: number | undefined, n: number) => 'drop' | 'full' | 'range' | 'stall',
): FaultHandler {
  return (req, res, _b, n) => {
    const m = /^bytes=(\d+)-(\d*)$/.exec(req.headers.range ?? '');
    const start = m ? Number(m[1]) : undefined;
    const what = behaviour(start, n);
    if (what === 'drop') {
      res.writeHead(start ? 206 : 200, {
        'content-length': data.length - (start ?? 0),
        ...(start ? { 'content-range': `bytes ${start}-${data.length - 1}/${data.length}` } : {}),
      });
      const from = start ?? 0;
      res.write(data.subarray(from, from + Math.floor((data.length - from) / 3)), () => {
        setTimeout(() => res.socket?.destroy(), 20);
      });
      return;
    }
    if (what === 'stall') {
      res.writeHead(200, { 'content-length': data.length });
      res.write(data.subarray(0, 10));
      return;
    }
    if (what === 'range' && start !== undefined) {
      res.writeHead(206, {
        'content-length': data.length - start,
        'content-range': `bytes ${start}-${data.length - 1}/${data.length}`,
      });
      return res.end(data.subarray(start));
    }
    res.writeHead(200, { 'content-length': data.length });
    res.end(data);
  };
}

test('a connection dropped mid-blob is resumed with Range and the whole is verified', async () => {
  const data = randomBytes(300_000);
  const desc: Descriptor = { mediaType: MediaType.ociLayerGzip, digest: digestOf(data), size: data.length };
  const s = await server(blobServer(data, (_start, n) => (n <= 2 ? 'drop' : 'range')));
  const { c } = client();
  const got = await buffer(await c.fetchBlob(ref(s.host), desc));
  assert.ok(got.equals(data));
  assert.equal(s.requests.length, 3);
  assert.equal(s.requests[0]?.headers.range, undefined);
  const first = Number(/^bytes=(\d+)-/.exec(s.requests[1]?.headers.range ?? '')?.[1]);
  const second = Number(/^bytes=(\d+)-/.exec(s.requests[2]?.headers.range ?? '')?.[1]);
  assert.ok(first > 0 && second > first && second < data.length, `${first} ${second}`);
});

test('a server that answers a resume with 200 has the received bytes skipped', async () => {
  const data = randomBytes(200_000);
  const desc: Descriptor = { mediaType: MediaType.ociLayerGzip, digest: digestOf(data), size: data.length };
  const s = await server(blobServer(data, (_start, n) => (n === 1 ? 'drop' : 'full')));
  const { c } = client();
  assert.ok((await buffer(await c.fetchBlob(ref(s.host), desc))).equals(data));
  assert.equal(s.requests.length, 2);
  assert.match(s.requests[1]?.headers.range ?? '', /^bytes=\d+-199999$/);
});

test('resumes are bounded: a connection that always drops fails as Unavailable', async () => {
  const data = randomBytes(100_000);
  const desc: Descriptor = { mediaType: MediaType.ociLayerGzip, digest: digestOf(data), size: data.length };
  const s = await server(blobServer(data, () => 'drop'));
  const { c } = client({ resumeAttempts: 2 });
  await assert.rejects(buffer(await c.fetchBlob(ref(s.host), desc)), (err: Error) => {
    kind('Unavailable')(err);
    assert.match(err.message, /resumed 2 times/);
    return true;
  });
  assert.equal(s.requests.length, 3);
});

test('ranged reads ask for the range and cut a server that sends everything', async () => {
  const data = randomBytes(5000);
  const desc: Descriptor = { mediaType: MediaType.ociLayerGzip, digest: digestOf(data), size: data.length };
  const ranged = await server(blobServer(data, () => 'range'));
  const ignoring = await server(blobServer(data, () => 'full'));
  const { c } = client();
  const a = await buffer(await c.fetchBlob(ref(ranged.host), desc, { range: { offset: 100, length: 50 } }));
  assert.ok(a.equals(data.subarray(100, 150)));
  assert.equal(ranged.requests[0]?.headers.range, 'bytes=100-149');
  const ignored: string[] = [];
  const b = await buffer(
    await c
      .blob(ref(ignoring.host), desc)
      .open({ range: { offset: 4990 }, onRangeIgnored: () => ignored.push('ignoring') }),
  );
  assert.ok(b.equals(data.subarray(4990)));
  await buffer(
    await c
      .blob(ref(ranged.host), desc)
      .open({ range: { offset: 10 }, onRangeIgnored: () => ignored.push('ranged') }),
  );
  assert.deepEqual(ignored, ['ignoring'], 'the caller hears which server sent everything');
  await assert.rejects(c.fetchBlob(ref(ranged.host), desc, { range: { offset: 5001 } }), kind('OutOfRange'));
});

// ---------------------------------------------------------------------------------------------------
// lying servers

test('blob bytes that do not match the digest fail with DataLoss', async () => {
  const data = randomBytes(1000);
  const lie = Buffer.from(data);
  lie[500] = (lie[500]! + 1) % 256;
  const desc: Descriptor = { mediaType: MediaType.ociLayerGzip, digest: digestOf(data), size: data.length };
  const s = await server((_req, res) => {
    res.writeHead(200, { 'content-length': lie.length });
    res.end(lie);
  });
  const longer = await server((_req, res) => {
    res.writeHead(200, { 'content-length': data.length + 1 });
    res.end(Buffer.concat([data, Buffer.from('x')]));
  });
  const { c } = client();
  await assert.rejects(buffer(await c.fetchBlob(ref(s.host), desc)), kind('DataLoss'));
  await assert.rejects(buffer(await c.fetchBlob(ref(longer.host), desc)), kind('DataLoss'));
});

test('a body past the declared size fails at the first byte too many, unverified reads too, and is not resumed', async () => {
  const data = randomBytes(1000);
  const desc: Descriptor = { mediaType: MediaType.ociLayerGzip, digest: digestOf(data), size: data.length };
  // The right bytes and one more, in a chunk of their own (chunked: no Content-Length to give it away).
  const oneMore = await server((_req, res) => {
    res.writeHead(200);
    res.write(data);
    setTimeout(() => res.end('x'), 20);
  });
  // Endless: chunks until the client goes away (bounded by the test's timeout if it never does).
  let endlessBytes = 0;
  const endless = await server((_req, res) => {
    res.writeHead(200);
    const chunk = Buffer.alloc(16 * 1024, 1);
    const pump = () => {
      while (!res.destroyed && res.write(chunk)) endlessBytes += chunk.length;
      if (!res.destroyed) res.once('drain', pump);
    };
    pump();
  });
  const { c } = client();
  for (const verify of [true, false]) {
    await assert.rejects(buffer(await c.fetchBlob(ref(oneMore.host), desc, { verify })), (err: Error) => {
      kind('DataLoss')(err);
      assert.match(err.message, /more than the 1000 bytes the descriptor declares/);
      return true;
    });
    await assert.rejects(buffer(await c.fetchBlob(ref(endless.host), desc, { verify })), kind('DataLoss'));
  }
  assert.equal(oneMore.requests.length, 2);
  assert.equal(endless.requests.length, 2);
  assert.ok(endlessBytes < 64 * 1024 * 1024, `${endlessBytes} bytes sent`);
  // A range short of the end is still cut, not refused, when the server sends everything.
  const whole = await server((_req, res) => {
    res.writeHead(200);
    res.end(Buffer.concat([data, Buffer.from('trailing')]));
  });
  const head = await buffer(await c.fetchBlob(ref(whole.host), desc, { range: { offset: 0, length: 10 } }));
  assert.ok(head.equals(data.subarray(0, 10)));
});

test('a manifest fetched by digest with other bytes fails with DataLoss', async () => {
  const other = Buffer.from(manifestBytes.toString().replace('"layers":[]', '"layers": []'));
  const s = await server((_req, res) =>
    sendManifest(res, other, { 'docker-content-digest': manifestDigest }),
  );
  const { c } = client();
  await assert.rejects(
    c.fetchManifest(ref(s.host, { tag: undefined, digest: manifestDigest })),
    (err: Error) => {
      kind('DataLoss')(err);
      assert.match(err.message, new RegExp(`team/app@${manifestDigest}`));
      return true;
    },
  );
  const desc: Descriptor = {
    mediaType: MediaType.ociManifest,
    digest: manifestDigest,
    size: manifestBytes.length,
  };
  await assert.rejects(c.fetchManifest(ref(s.host), { descriptor: desc }), kind('DataLoss'));
});

test('a Docker-Content-Digest that does not match the body fails with DataLoss', async () => {
  const wrong = digestOf('something else');
  const s = await server((req, res) => {
    if (req.method === 'HEAD') {
      res.writeHead(200, {
        'content-type': MediaType.ociManifest,
        'content-length': manifestBytes.length,
        'docker-content-digest': wrong,
      });
      return res.end();
    }
    sendManifest(res, manifestBytes, { 'docker-content-digest': wrong });
  });
  const { c } = client();
  await assert.rejects(c.fetchManifest(ref(s.host)), kind('DataLoss'));
  // Resolving by digest: the registry names another digest.
  await assert.rejects(c.resolve(ref(s.host, { tag: undefined, digest: manifestDigest })), kind('DataLoss'));
});

test('putManifest refuses a registry that reports another digest', async () => {
  const s = await server((_req, res) => {
    res.writeHead(201, { 'docker-content-digest': digestOf('other'), 'content-length': 0 });
    res.end();
  });
  const { c } = client();
  await assert.rejects(c.putManifest(ref(s.host), manifestBytes, MediaType.ociManifest), kind('DataLoss'));
  await assert.rejects(
    c.putManifest(
      ref(s.host, { tag: undefined, digest: digestOf('x') }),
      manifestBytes,
      MediaType.ociManifest,
    ),
    kind('InvalidArgument'),
  );
});

test('resolve falls back to GET when HEAD has no digest or is not allowed', async () => {
  const noDigest = await server((req, res) => {
    if (req.method === 'HEAD') {
      res.writeHead(200, { 'content-type': MediaType.ociManifest, 'content-length': manifestBytes.length });
      return res.end();
    }
    sendManifest(res, manifestBytes, { 'docker-content-digest': '' });
  });
  const noHead = await server((req, res) => {
    if (req.method === 'HEAD') {
      res.writeHead(405);
      return res.end();
    }
    sendManifest(res);
  });
  const { c } = client();
  for (const s of [noDigest, noHead]) {
    const d = await c.resolve(ref(s.host));
    assert.deepEqual(d, {
      mediaType: MediaType.ociManifest,
      digest: manifestDigest,
      size: manifestBytes.length,
    });
    assert.deepEqual(
      s.requests.map((r) => r.method),
      ['HEAD', 'GET'],
    );
    assert.match(String(s.requests[0]?.headers.accept), /image\.index\.v1\+json.*manifest\.v2\+json/);
  }
});

test('an oversize manifest is refused on Content-Length and while reading', async () => {
  const big = Buffer.alloc(4 * 1024 * 1024 + 1, 0x20);
  const withLength = await server((_req, res) => {
    res.writeHead(200, { 'content-type': MediaType.ociManifest, 'content-length': big.length });
    res.end(big);
  });
  const chunked = await server((_req, res) => {
    res.writeHead(200, { 'content-type': MediaType.ociManifest });
    res.end(big);
  });
  const { c } = client();
  await assert.rejects(c.fetchManifest(ref(withLength.host)), kind('ResourceExhausted'));
  await assert.rejects(c.fetchManifest(ref(chunked.host)), kind('ResourceExhausted'));
});

test('tags: Link pagination with n and last, other origins not followed', async () => {
  const all = ['a', 'b', 'c', 'd', 'e'];
  const s = await server((req, res) => {
    const url = new URL(req.url ?? '/', 'http://x');
    const n = Number(url.searchParams.get('n') ?? 100);
    const last = url.searchParams.get('last');
    const from = last ? all.indexOf(last) + 1 : 0;
    const page = all.slice(from, from + n);
    const headers: Record<string, string> = { 'content-type': 'application/json' };
    if (from + n < all.length)
      headers.link = `</v2/team/app/tags/list?n=${n}&last=${page.at(-1)}>; rel="next"`;
    res.writeHead(200, headers);
    res.end(JSON.stringify({ name: 'team/app', tags: page }));
  });
  const { c } = client();
  assert.deepEqual(await c.listTags(ref(s.host), { pageSize: 2 }), all);
  assert.deepEqual(
    s.requests.map((r) => r.url),
    ['/v2/team/app/tags/list?n=2', '/v2/team/app/tags/list?n=2&last=b', '/v2/team/app/tags/list?n=2&last=d'],
  );
  const elsewhere = await server((_req, res) => {
    res.writeHead(200, {
      'content-type': 'application/json',
      link: '<http://127.0.0.2:1/v2/x/tags/list?last=b>; rel="next"',
    });
    res.end(JSON.stringify({ name: 'team/app', tags: ['a', 'b'] }));
  });
  assert.deepEqual(await c.listTags(ref(elsewhere.host)), ['a', 'b']);
  assert.equal(elsewhere.requests.length, 1);
  const bad = await server((_req, res) => {
    res.writeHead(200, { 'content-type': 'application/json' });
    res.end('{"tags": "nope"}');
  });
  await assert.rejects(c.listTags(ref(bad.host)), kind('InvalidArgument'));
});

test('tags: a Link back to a page already read ends the listing', async () => {
  // What a registry answering `n=0` with a Link to the same request sends (the facade once did).
  const s = await server((req, res) => {
    const url = new URL(req.url ?? '/', 'http://x');
    const last = url.searchParams.get('last');
    const headers: Record<string, string> = {
      'content-type': 'application/json',
      link: '</v2/team/app/tags/list?last=a>; rel="next"',
    };
    res.writeHead(200, headers);
    res.end(JSON.stringify({ name: 'team/app', tags: last ? [] : ['a'] }));
  });
  const { c } = client();
  assert.deepEqual(await c.listTags(ref(s.host)), ['a']);
  assert.equal(s.requests.length, 2);
});

// ---------------------------------------------------------------------------------------------------
// redirects and credentials

test('a redirect to another origin does not carry Authorization', async () => {
  const data = randomBytes(2048);
  const desc: Descriptor = { mediaType: MediaType.ociLayerGzip, digest: digestOf(data), size: data.length };
  const storage = await server((_req, res) => {
    res.writeHead(200, { 'content-length': data.length });
    res.end(data);
  });
  const basic = `Basic ${Buffer.from('alice:secret').toString('base64')}`;
  const registry = await server((req, res) => {
    if (req.headers.authorization !== basic) {
      return sendError(res, 401, 'UNAUTHORIZED', 'who', { 'www-authenticate': 'Basic realm="test"' });
    }
    if (req.url?.includes('/blobs/') && !req.url.includes('local=1')) {
      res.writeHead(307, { location: `${storage.url}/store/blob?sig=abc` });
      return res.end();
    }
    res.writeHead(200, { 'content-length': data.length });
    res.end(data);
  });
  const { c } = client({
    credentials: staticCredentials({
      [registry.host]: { kind: 'basic', username: 'alice', password: 'secret' },
    }),
  });
  assert.ok((await buffer(await c.fetchBlob(ref(registry.host), desc))).equals(data));
  assert.equal(storage.requests.length, 1);
  assert.equal(storage.requests[0]?.url, '/store/blob?sig=abc');
  assert.equal(storage.requests[0]?.headers.authorization, undefined);
  assert.equal(registry.requests.at(-1)?.headers.authorization, basic);
});

test("a challenge from the storage a blob GET was redirected to is not taken as the registry's", async () => {
  const data = randomBytes(2048);
  const desc: Descriptor = { mediaType: MediaType.ociLayerGzip, digest: digestOf(data), size: data.length };
  // A realm the registry never named: it must never see the registry's credentials.
  const elsewhere = await server((_req, res) => {
    const body = JSON.stringify({ token: 'stolen' });
    res.writeHead(200, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body) });
    res.end(body);
  });
  const storage = await server((_req, res) =>
    sendError(res, 401, 'UNAUTHORIZED', 'signature expired', {
      'www-authenticate': `Bearer realm="${elsewhere.url}/token",service="storage"`,
    }),
  );
  const registry = await server((_req, res) => {
    res.writeHead(307, { location: `${storage.url}/store/blob?sig=old` });
    res.end();
  });
  const { c } = client({
    credentials: staticCredentials({
      [registry.host]: { kind: 'basic', username: 'alice', password: 'secret' },
    }),
  });
  await assert.rejects(async () => buffer(await c.fetchBlob(ref(registry.host), desc)));
  assert.deepEqual(
    elsewhere.requests.map((r) => r.headers.authorization),
    [],
  );
  for (const r of registry.requests) assert.equal(r.headers.authorization, undefined);
});

test('credentials saved for a host with its default port (docker login host:80) are found', async (t) => {
  const basic = `Basic ${Buffer.from('alice:secret').toString('base64')}`;
  const http = createServer((req, res) => {
    if (req.headers.authorization !== basic) {
      return sendError(res, 401, 'UNAUTHORIZED', 'who', { 'www-authenticate': 'Basic realm="test"' });
    }
    sendManifest(res);
  });
  // The default port is privileged: without the right to bind it there is nothing to show.
  const bound = await new Promise<boolean>((resolve) => {
    http.once('error', () => resolve(false));
    http.listen({ host: '127.0.0.1', port: 80 }, () => resolve(true));
  });
  if (!bound) return t.skip('cannot listen on 127.0.0.1:80');
  cleanups.push(
    () =>
      new Promise<void>((resolve) => {
        http.closeAllConnections();
        http.close(() => resolve());
      }),
  );
  const { c } = client({
    credentials: staticCredentials({
      '127.0.0.1:80': { kind: 'basic', username: 'alice', password: 'secret' },
    }),
  });
  assert.equal((await c.fetchManifest(ref('127.0.0.1:80'))).digest, manifestDigest);
});

test('too many redirects fail instead of looping', async () => {
  const s = await server((req, res) => {
    const n = Number(/hop=(\d+)/.exec(req.url ?? '')?.[1] ?? 0);
    res.writeHead(302, { location: `/v2/team/app/blobs/x?hop=${n + 1}` });
    res.end();
  });
  const data = Buffer.from('x');
  const desc: Descriptor = { mediaType: MediaType.ociLayerGzip, digest: digestOf(data), size: 1 };
  const { c } = client();
  await assert.rejects(c.fetchBlob(ref(s.host), desc), kind('Unavailable'));
  assert.equal(s.requests.length, 6);
});

test('a redirect back to a URL already visited fails as a redirect loop', async () => {
  const data = Buffer.from('x');
  const desc: Descriptor = { mediaType: MediaType.ociLayerGzip, digest: digestOf(data), size: 1 };
  const storage = await server(() => {});
  const registry = await server((_req, res) => {
    res.writeHead(307, { location: `${storage.url}/store/blob?sig=abc` });
    res.end();
  });
  storage.handler = (_req, res) => {
    res.writeHead(302, { location: `${registry.url}/v2/team/app/blobs/${desc.digest}` });
    res.end();
  };
  const { c } = client();
  await assert.rejects(c.fetchBlob(ref(registry.host), desc), (err: Error) => {
    kind('Unavailable')(err);
    assert.match(err.message, /: redirect loop$/);
    return true;
  });
  assert.equal(registry.requests.length, 1);
});

test('wrong credentials → Unauthenticated; 403 → PermissionDenied; 404 codes → NotFound', async () => {
  const s = await server((req, res) => {
    if (req.url?.includes('denied')) return sendError(res, 403, 'DENIED', 'no access');
    if (req.url?.includes('missing'))
      return sendError(res, 404, 'NAME_UNKNOWN', 'repository name not known to registry');
    sendError(res, 401, 'UNAUTHORIZED', 'authentication required', { 'www-authenticate': 'Basic realm="x"' });
  });
  const { c } = client({
    credentials: staticCredentials({ [s.host]: { kind: 'basic', username: 'u', password: 'bad' } }),
  });
  await assert.rejects(c.fetchManifest(ref(s.host)), (err: Error) => {
    kind('Unauthenticated')(err);
    assert.match(err.message, /UNAUTHORIZED/);
    return true;
  });
  await assert.rejects(c.fetchManifest(ref(s.host, { path: 'denied/app' })), kind('PermissionDenied'));
  await assert.rejects(c.listTags(ref(s.host, { path: 'missing/app' })), (err: Error) => {
    kind('NotFound')(err);
    assert.match(err.message, /NAME_UNKNOWN/);
    return true;
  });
});

test("a registry's 401 says whether credentials were missing or refused, naming the host", async () => {
  const s = await server((_req, res) =>
    sendError(res, 401, 'UNAUTHORIZED', 'authentication required', { 'www-authenticate': 'Basic realm="x"' }),
  );
  const none = client().c;
  // HEAD (resolve: no body to quote) and GET (fetch: the body's code) alike.
  for (const call of [() => none.resolve(ref(s.host)), () => none.fetchManifest(ref(s.host))]) {
    await assert.rejects(call(), (err: Error) => {
      kind('Unauthenticated')(err);
      assert.match(
        err.message,
        new RegExp(`: ${s.host} asks for credentials, and none are configured for it; registry answered 401`),
      );
      return true;
    });
  }
  const wrong = client({
    credentials: staticCredentials({ [s.host]: { kind: 'basic', username: 'u', password: 'bad' } }),
  }).c;
  await assert.rejects(wrong.resolve(ref(s.host)), (err: Error) => {
    kind('Unauthenticated')(err);
    assert.match(err.message, new RegExp(`${s.host} refused the credentials configured for it`));
    return true;
  });
});

/** Answers a /token request with a token that is its scopes, base64url; false for any other request. */
function issuedScopeToken(req: IncomingMessage, res: ServerResponse): boolean {
  const url = new URL(req.url ?? '/', 'http://x');
  if (url.pathname !== '/token') return false;
  const token = Buffer.from(url.searchParams.getAll('scope').join(' ')).toString('base64url');
  res.writeHead(200, { 'content-type': 'application/json' });
  res.end(JSON.stringify({ token, expires_in: 300 }));
  return true;
}

/** The scopes a token of issuedScopeToken grants. */
const grantedBy = (authorization: string): string =>
  Buffer.from(authorization.slice(7), 'base64url').toString();

test('Bearer: insufficient_scope in a 401 adds the scope for the one retry', async () => {
  const s = await server((req, res) => {
    if (issuedScopeToken(req, res)) return;
    const challenge = (extra: string): Record<string, string> => ({
      'www-authenticate': `Bearer realm="http://${req.headers.host}/token",service="svc"${extra}`,
    });
    const auth = req.headers.authorization ?? '';
    if (!auth.startsWith('Bearer ')) return sendError(res, 401, 'UNAUTHORIZED', 'auth', challenge(''));
    const granted = grantedBy(auth);
    if (!granted.includes('repository:other/base:pull')) {
      return sendError(
        res,
        401,
        'UNAUTHORIZED',
        'scope',
        challenge(',error="insufficient_scope",scope="repository:other/base:pull"'),
      );
    }
    sendManifest(res);
  });
  const { c } = client();
  // No token → 401 (challenge learnt) → token for team/app → 401 insufficient_scope → fresh token with both.
  assert.equal((await c.fetchManifest(ref(s.host))).digest, manifestDigest);
  const tokenRequests = s.requests.filter((r) => r.url.startsWith('/token'));
  assert.equal(tokenRequests.length, 2);
  const scopes = (r: { url: string } | undefined): string[] =>
    new URL(r?.url ?? '/', 'http://x').searchParams.getAll('scope');
  assert.deepEqual(scopes(tokenRequests[0]), ['repository:team/app:pull']);
  assert.deepEqual(scopes(tokenRequests[1]), ['repository:other/base:pull', 'repository:team/app:pull']);
  // Still refused after the fresh token: Unauthenticated, with no further attempts.
  const before = s.requests.length;
  const issue = s.handler;
  s.handler = (req, res, body, n) => {
    if (req.url?.startsWith('/token')) return issue(req, res, body, n);
    sendError(res, 401, 'UNAUTHORIZED', 'no', {
      'www-authenticate': `Bearer realm="${s.url}/token",service="svc"`,
    });
  };
  await assert.rejects(c.fetchManifest(ref(s.host)), kind('Unauthenticated'));
  // The cached token, refused; one fresh token, refused: nothing more.
  assert.deepEqual(
    s.requests.slice(before).map((r) => r.url.split('?')[0]),
    ['/v2/team/app/manifests/v1', '/token', '/v2/team/app/manifests/v1'],
  );
});

// A stub, not docker-registry: distribution's registry answers a token lacking a scope with 401
// (error="insufficient_scope" in its challenge) and cannot be made to answer 403; registries that follow
// RFC 6750 §3.1 answer 403, some saying so only in the error body.
test('Bearer: a 403 insufficient_scope (in the challenge or only in the body) adds the scope for one retry', async () => {
  let inBody = false;
  const s = await server((req, res) => {
    if (issuedScopeToken(req, res)) return;
    const realm = `Bearer realm="http://${req.headers.host}/token",service="svc"`;
    const auth = req.headers.authorization ?? '';
    if (!auth.startsWith('Bearer ')) {
      return sendError(res, 401, 'UNAUTHORIZED', 'auth', { 'www-authenticate': realm });
    }
    const granted = grantedBy(auth);
    if (!granted.includes('repository:other/base:pull')) {
      const scope = ',scope="repository:other/base:pull"';
      if (inBody) {
        return sendError(res, 403, 'insufficient_scope', 'token lacks a scope', {
          'www-authenticate': `${realm}${scope}`,
        });
      }
      return sendError(res, 403, 'DENIED', 'scope', {
        'www-authenticate': `${realm},error="insufficient_scope"${scope}`,
      });
    }
    sendManifest(res);
  });
  const scopes = (r: { url: string } | undefined): string[] =>
    new URL(r?.url ?? '/', 'http://x').searchParams.getAll('scope');
  for (const body of [false, true]) {
    inBody = body;
    const before = s.requests.length;
    const { c } = client();
    // No token → 401 (challenge learnt) → token for team/app → 403 insufficient_scope → token with both.
    assert.equal((await c.fetchManifest(ref(s.host))).digest, manifestDigest, `in body: ${body}`);
    const tokenRequests = s.requests.slice(before).filter((r) => r.url.startsWith('/token'));
    assert.deepEqual(tokenRequests.map(scopes), [
      ['repository:team/app:pull'],
      ['repository:other/base:pull', 'repository:team/app:pull'],
    ]);
  }
  // A 403 that is not about scope is the answer, asked once; so is a second insufficient_scope.
  const issue = s.handler;
  for (const code of ['DENIED', 'insufficient_scope']) {
    s.handler = (req, res, body, n) => {
      if (req.url?.startsWith('/token')) return issue(req, res, body, n);
      if (!req.headers.authorization) {
        return sendError(res, 401, 'UNAUTHORIZED', 'auth', {
          'www-authenticate': `Bearer realm="${s.url}/token",service="svc"`,
        });
      }
      sendError(res, 403, code, 'no', {
        'www-authenticate': `Bearer realm="${s.url}/token",service="svc",scope="repository:x/y:pull"`,
      });
    };
    const { c } = client();
    const before = s.requests.length;
    await assert.rejects(c.fetchManifest(ref(s.host)), (err: Error) => {
      kind('PermissionDenied')(err);
      assert.match(err.message, new RegExp(code));
      return true;
    });
    const manifests = s.requests.slice(before).filter((r) => r.url.startsWith('/v2/team/app/manifests'));
    assert.equal(manifests.length, code === 'DENIED' ? 2 : 3, code);
  }
});

test('identity tokens are exchanged with the OAuth2 refresh_token grant', async () => {
  const s = await server((req, res, body) => {
    if (req.url === '/oauth') {
      const form = new URLSearchParams(body.toString());
      const ok =
        req.method === 'POST' &&
        form.get('grant_type') === 'refresh_token' &&
        form.get('refresh_token') === 'rt-1';
      res.writeHead(ok ? 200 : 400, { 'content-type': 'application/json' });
      return res.end(
        JSON.stringify(
          ok
            ? { access_token: 'at-1', expires_in: 120, scope: form.get('scope') }
            : { error: 'invalid_grant' },
        ),
      );
    }
    if (req.headers.authorization !== 'Bearer at-1') {
      return sendError(res, 401, 'UNAUTHORIZED', 'auth', {
        'www-authenticate': `Bearer realm="http://${req.headers.host}/oauth",service="svc",scope="repository:team/app:pull"`,
      });
    }
    sendManifest(res);
  });
  const { c } = client({
    credentials: staticCredentials({ [s.host]: { kind: 'identityToken', token: 'rt-1' } }),
  });
  assert.equal((await c.fetchManifest(ref(s.host))).digest, manifestDigest);
  const oauth = s.requests.find((r) => r.url === '/oauth');
  const form = new URLSearchParams(oauth?.body.toString());
  assert.equal(form.get('service'), 'svc');
  assert.equal(form.get('scope'), 'repository:team/app:pull');
  assert.equal(form.get('client_id'), 'strata');
  // Cached: a second fetch asks for no token.
  await c.fetchManifest(ref(s.host));
  assert.equal(s.requests.filter((r) => r.url === '/oauth').length, 1);
});

test('a caller that gives up does not fail the others waiting for the same token', async () => {
  let release = (): void => {};
  let held = Promise.resolve();
  const hold = (): void => {
    held = new Promise<void>((resolve) => {
      release = resolve;
    });
  };
  let abandoned = 0;
  const s = await server(async (req, res) => {
    if (req.url?.startsWith('/token')) {
      res.on('close', () => {
        if (!res.writableFinished) abandoned++;
      });
      await held;
      return issuedScopeToken(req, res);
    }
    if (!req.headers.authorization?.startsWith('Bearer ')) {
      return sendError(res, 401, 'UNAUTHORIZED', 'auth', {
        'www-authenticate': `Bearer realm="http://${req.headers.host}/token",service="svc"`,
      });
    }
    sendManifest(res);
  });
  const { c } = client();
  hold();
  const ac = new AbortController();
  const first = c.fetchManifest(ref(s.host), { signal: ac.signal });
  await waitFor(() => s.requests.some((r) => r.url.startsWith('/token')), 5_000);
  // The challenge is known now, so the second caller goes straight to the token the first is fetching
  // (no I/O on the way: one turn of the loop gets it there).
  const second = c.fetchManifest(ref(s.host));
  await new Promise((resolve) => setImmediate(resolve));
  ac.abort();
  await assert.rejects(within(first, 5_000, 'the aborted fetch'), kind('Aborted'));
  release();
  assert.equal((await within(second, 5_000, 'the other fetch')).digest, manifestDigest);
  assert.equal(abandoned, 0);
  // Once every caller has given up, the token request goes too.
  hold();
  const third = new AbortController();
  const gone = c.fetchManifest(ref(s.host, { path: 'team/other' }), { signal: third.signal });
  await waitFor(() => s.requests.filter((r) => r.url.startsWith('/token')).length === 2, 5_000);
  third.abort();
  // A caller that comes right after gets a token request of its own, not the abandoned one.
  const fourth = c.fetchManifest(ref(s.host, { path: 'team/other' }));
  await assert.rejects(within(gone, 5_000, 'the abandoned fetch'), kind('Aborted'));
  await waitFor(() => abandoned === 1, 5_000);
  release();
  assert.equal((await within(fourth, 5_000, 'the fetch after')).digest, manifestDigest);
});

test('a token response that is not JSON fails without quoting the token', async () => {
  const s = await server((req, res) => {
    if (req.url?.startsWith('/token')) {
      res.writeHead(200, { 'content-type': 'text/plain' });
      return res.end('s3cr3t-t0ken-42');
    }
    sendError(res, 401, 'UNAUTHORIZED', 'auth', {
      'www-authenticate': `Bearer realm="http://${req.headers.host}/token",service="svc"`,
    });
  });
  const { c } = client();
  await assert.rejects(c.fetchManifest(ref(s.host)), (err: Error) => {
    kind('Unauthenticated')(err);
    assert.match(err.message, /token response is not JSON/);
    assert.doesNotMatch(err.message, /s3cr3t/);
    return true;
  });
});

// ---------------------------------------------------------------------------------------------------
// timeouts and aborts

test('a server that never answers trips the headers timeout', async () => {
  const s = await server(() => {});
  const { c } = client({ timeouts: { headersMs: 200 }, retry: { attempts: 1 } });
  await assert.rejects(c.fetchManifest(ref(s.host)), (err: Error) => {
    kind('DeadlineExceeded')(err);
    assert.match(err.message, /waiting for headers/);
    return true;
  });
});

test('a body that stalls trips the idle timeout (manifest and blob)', async () => {
  const data = randomBytes(1000);
  const desc: Descriptor = { mediaType: MediaType.ociLayerGzip, digest: digestOf(data), size: data.length };
  const s = await server((req, res) => {
    res.writeHead(200, { 'content-type': MediaType.ociManifest, 'content-length': 1000 });
    res.write(req.url?.includes('manifests') ? '{"schemaVersion":' : data.subarray(0, 10));
  });
  const { c } = client({ timeouts: { bodyIdleMs: 200 }, retry: { attempts: 1 }, resumeAttempts: 1 });
  await assert.rejects(c.fetchManifest(ref(s.host)), kind('DeadlineExceeded'));
  await assert.rejects(buffer(await c.fetchBlob(ref(s.host), desc)), kind('DeadlineExceeded'));
  assert.equal(s.requests.length, 3);
});

test('aborting a download ends it with Aborted', async () => {
  const data = randomBytes(1000);
  const desc: Descriptor = { mediaType: MediaType.ociLayerGzip, digest: digestOf(data), size: data.length };
  const s = await server((_req, res) => {
    res.writeHead(200, { 'content-length': data.length });
    res.write(data.subarray(0, 100));
  });
  const { c } = client();
  const ac = new AbortController();
  const stream = await c.fetchBlob(ref(s.host), desc, { signal: ac.signal });
  const reading = buffer(stream);
  setTimeout(() => ac.abort(), 50);
  await assert.rejects(reading, kind('Aborted'));
  await assert.rejects(c.fetchManifest(ref(s.host), { signal: AbortSignal.abort() }), kind('Aborted'));
  assert.equal(s.requests.length, 1);
});
