// The HTTP edge of hosted repositories under requests real clients make but the happy path does not: a
// refused body leaves the connection usable for the client's next request (and one declared too big is
// refused before it is sent), a last chunk out of order is refused without losing the upload, and a body
// that arrives slowly is taken however long it takes.
import assert from 'node:assert/strict';
import { Agent, request } from 'node:http';
import { connect } from 'node:net';
import { test } from 'node:test';
import { digestOf } from '../../src/oci/digest.ts';
import { MAX_MANIFEST_BYTES } from '../../src/oci/manifest.ts';
import { MediaType } from '../../src/oci/media-types.ts';
import { raw, startHosted } from '../helpers/hosted.ts';
import { removeTempDir, tempDir } from '../helpers/tmp.ts';

interface Answer {
  status: number;
  body: string;
  /** Whether the request went over a connection an earlier request had used. */
  reused: boolean;
}

/** One request through `agent`, with a 30 s bound. */
function send(agent: Agent, base: string, method: string, path: string, body?: Uint8Array): Promise<Answer> {
  return new Promise((resolve, reject) => {
    const req = request(
      new URL(path, base),
      { method, agent, signal: AbortSignal.timeout(30_000) },
      (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (c: Buffer) => chunks.push(c));
        res.on('end', () =>
          resolve({
            status: res.statusCode ?? 0,
            body: Buffer.concat(chunks).toString(),
            reused: req.reusedSocket,
          }),
        );
        res.on('error', reject);
      },
    );
    req.on('error', reject);
    if (body) {
      req.setHeader('content-type', MediaType.ociManifest);
      // Chunked, with no Content-Length: the server learns the size only by reading.
      req.write(body);
    }
    req.end();
  });
}

test('a manifest over the size limit is answered, and its connection serves the next request', async (t) => {
  const root = await tempDir('hosted-big-manifest');
  t.after(() => removeTempDir(root));
  const strata = await startHosted(root);
  t.after(() => strata.app.close());
  // One connection kept alive between requests, as clients' pools keep them.
  const agent = new Agent({ keepAlive: true, maxSockets: 1 });
  t.after(() => agent.destroy());
  assert.equal((await send(agent, strata.url, 'GET', '/v2/')).status, 200);
  // Still being sent when the server has read enough to refuse it.
  const big = Buffer.alloc(MAX_MANIFEST_BYTES + (1 << 20), 0x20);
  const put = await send(agent, strata.url, 'PUT', '/v2/big/app/manifests/v1', big);
  // The spec's status for a manifest over the limit, with docker-registry's code.
  assert.equal(put.status, 413);
  assert.equal((JSON.parse(put.body) as { errors: { code: string }[] }).errors[0]?.code, 'MANIFEST_INVALID');
  const next = await send(agent, strata.url, 'GET', '/v2/');
  assert.equal(next.status, 200);
  assert.ok(next.reused, 'the connection the refusal came on carries the next request');
});

test('a manifest whose Content-Length is over the limit is refused before its body is sent', async (t) => {
  const root = await tempDir('hosted-declared-manifest');
  t.after(() => removeTempDir(root));
  const strata = await startHosted(root);
  t.after(() => strata.app.close());
  const socket = connect(Number(new URL(strata.url).port), '127.0.0.1');
  try {
    socket.write(
      'PUT /v2/big/app/manifests/v1 HTTP/1.1\r\nHost: strata\r\n' +
        `Content-Type: ${MediaType.ociManifest}\r\nContent-Length: ${MAX_MANIFEST_BYTES + 1}\r\n\r\n`,
    );
    // Not a byte of the body: the answer comes all the same.
    const head = await new Promise<string>((resolve, reject) => {
      let got = '';
      socket.on('data', (c: Buffer) => {
        got += c.toString('latin1');
        if (got.includes('\r\n\r\n')) resolve(got);
      });
      socket.on('error', reject);
      setTimeout(() => reject(new Error(`no answer in 10 s; got ${JSON.stringify(got)}`)), 10_000).unref();
    });
    assert.match(head, /^HTTP\/1\.1 413 /);
  } finally {
    // Before the server closes: it would wait for the body still owed.
    socket.destroy();
  }
});

test('a last chunk out of order in the closing PUT is refused with 416, and the upload goes on', async (t) => {
  const root = await tempDir('hosted-put-chunk');
  t.after(() => removeTempDir(root));
  const strata = await startHosted(root);
  t.after(() => strata.app.close());
  const blob = Buffer.from('0123456789abcdefghij');
  const d = digestOf(blob);
  const start = await raw(strata.url, 'POST', '/v2/chunks/app/blobs/uploads/');
  const location = start.headers.get('location')!;
  const first = await raw(strata.url, 'PATCH', location, {
    headers: { 'content-range': '0-9' },
    body: blob.subarray(0, 10),
  });
  assert.equal(first.status, 202);
  // The last chunk, but sent as if the upload held 5 more bytes than it does.
  const wrong = await raw(strata.url, 'PUT', `${location}?digest=${d}`, {
    headers: { 'content-range': '15-19' },
    body: blob.subarray(15),
  });
  assert.equal(wrong.status, 416);
  assert.equal(wrong.code, 'RANGE_INVALID');
  // Nothing of it was taken: the client asks where the upload stands and sends the rest from there.
  const status = await raw(strata.url, 'GET', location);
  assert.equal(status.status, 204);
  assert.equal(status.headers.get('range'), '0-9');
  const done = await raw(strata.url, 'PUT', `${location}?digest=${d}`, {
    headers: { 'content-range': '10-19' },
    body: blob.subarray(10),
  });
  assert.equal(done.status, 201);
  assert.equal(digestOf((await raw(strata.url, 'GET', `/v2/chunks/app/blobs/${d}`)).body), d);
});

test('an upload whose body takes longer than a minute to arrive is taken whole', {
  timeout: 180_000,
}, async (t) => {
  const root = await tempDir('hosted-slow-body');
  t.after(() => removeTempDir(root));
  const strata = await startHosted(root);
  t.after(() => strata.app.close());
  const start = await raw(strata.url, 'POST', '/v2/slow/app/blobs/uploads/');
  assert.equal(start.status, 202);
  const location = new URL(start.headers.get('location')!, strata.url);
  // A chunk a second for 65 seconds, as a steady but slow link delivers a big layer.
  const chunk = Buffer.alloc(1000, 0x61);
  const chunks = 65;
  const answer = await new Promise<{ status: number; range: string | undefined }>((resolve, reject) => {
    const req = request(location, { method: 'PATCH', signal: AbortSignal.timeout(120_000) }, (res) => {
      res.resume();
      res.on('end', () => resolve({ status: res.statusCode ?? 0, range: res.headers.range }));
    });
    req.on('error', reject);
    let sent = 0;
    const timer = setInterval(() => {
      req.write(chunk);
      if (++sent === chunks) {
        clearInterval(timer);
        req.end();
      }
    }, 1000);
    req.on('close', () => clearInterval(timer));
  });
  assert.deepEqual(answer, { status: 202, range: `0-${chunks * chunk.length - 1}` });
  const whole = Buffer.concat(Array.from({ length: chunks }, () => chunk));
  const done = await raw(strata.url, 'PUT', `${location.pathname}?digest=${digestOf(whole)}`);
  assert.equal(done.status, 201);
});
