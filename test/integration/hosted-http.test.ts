// The HTTP edge of hosted repositories under requests real clients make but the happy path does not: a
// refused body leaves the connection usable for the client's next request (and one declared too big is
// refused before it is sent), a last chunk out of order is refused without losing the upload, a body
// that arrives slowly is taken however long it takes, and one the disk has no room for is answered.
import assert from 'node:assert/strict';
import { statfsSync } from 'node:fs';
import { mkdir, rm, writeFile } from 'node:fs/promises';
import { Agent, request } from 'node:http';
import { connect } from 'node:net';
import { join } from 'node:path';
import { test } from 'node:test';
import { digestOf } from '../../src/oci/digest.ts';
import { MAX_MANIFEST_BYTES } from '../../src/oci/manifest.ts';
import { MediaType } from '../../src/oci/media-types.ts';
import { raw, startHosted } from '../helpers/hosted.ts';
import { runCommand } from '../helpers/process.ts';
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

/** Bytes the file system at `dir` still gives an unprivileged writer. */
function freeBytes(dir: string): number {
  const s = statfsSync(dir);
  return s.bavail * s.bsize;
}

/**
 * A PATCH whose body keeps coming (256 KiB every few ms, `total` in all) as a client streaming a layer
 * sends it, whenever the server answers. Resolves with the answer once the whole body is sent and the
 * connection is still open; rejects if it breaks instead (a reset, or closed before the body was sent).
 */
function streamingPatch(url: URL, total: number): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    let answer: { status: number; body: string } | undefined;
    let sentAll = false;
    const done = (): void => {
      if (answer && sentAll) resolve(answer);
    };
    const agent = new Agent({ keepAlive: true });
    const req = request(url, { method: 'PATCH', agent, signal: AbortSignal.timeout(60_000) }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () => {
        answer = { status: res.statusCode ?? 0, body: Buffer.concat(chunks).toString() };
        done();
      });
      res.on('error', reject);
    });
    req.on('error', reject);
    req.on('socket', (socket) =>
      socket.once('close', () => {
        agent.destroy();
        if (!sentAll) reject(new Error('the server closed the connection before the body was sent'));
      }),
    );
    req.on('finish', () => {
      sentAll = true;
      done();
      agent.destroy();
    });
    req.setHeader('content-type', 'application/octet-stream');
    const chunk = Buffer.alloc(256 << 10, 0x5a);
    let sent = 0;
    const next = (): void => {
      if (sent >= total) {
        req.end();
        return;
      }
      sent += chunk.length;
      req.write(chunk);
      setTimeout(next, 5);
    };
    next();
  });
}

test('an upload the disk has no room for is answered 507 on its connection, and discarded to free the room', {
  timeout: 120_000,
}, async (t) => {
  const work = await tempDir('hosted-full');
  const root = join(work, 'root');
  await mkdir(root);
  await runCommand('mount', ['-t', 'tmpfs', '-o', 'size=24m', 'tmpfs', root]);
  // One hook, in this order: the server lets go of the files before the unmount.
  let strata: Awaited<ReturnType<typeof startHosted>> | undefined;
  t.after(async () => {
    await strata?.app.close();
    await runCommand('umount', [root]);
    await removeTempDir(work);
  });
  strata = await startHosted(root);
  // Room for 2 MiB more.
  const filler = join(root, 'filler');
  await writeFile(filler, Buffer.alloc(freeBytes(root) - (2 << 20)));
  const before = freeBytes(root);

  const start = await raw(strata.url, 'POST', '/v2/full/app/blobs/uploads/');
  assert.equal(start.status, 202);
  const location = new URL(start.headers.get('location')!, strata.url);
  // Still sending when the disk fills: the answer comes on the connection, not a reset.
  const patch = await streamingPatch(location, 16 << 20);
  assert.equal(patch.status, 507);
  assert.equal(
    (JSON.parse(patch.body) as { errors: { code: string }[] }).errors[0]?.code,
    'BLOB_UPLOAD_INVALID',
  );
  // The upload is gone, and so are its bytes.
  const gone = await raw(strata.url, 'GET', location.pathname);
  assert.equal(gone.status, 404);
  assert.equal(gone.code, 'BLOB_UPLOAD_UNKNOWN');
  assert.ok(freeBytes(root) >= before - (256 << 10), `${freeBytes(root)} bytes free, ${before} before`);

  // A monolithic upload too big for the disk: answered, and nothing of it kept.
  const big = Buffer.alloc(8 << 20, 0x33);
  const mono = await raw(strata.url, 'POST', `/v2/full/app/blobs/uploads/?digest=${digestOf(big)}`, {
    body: big,
  });
  assert.equal(mono.status, 507);
  assert.equal(mono.code, 'BLOB_UPLOAD_INVALID');
  assert.ok(freeBytes(root) >= before - (256 << 10), `${freeBytes(root)} bytes free, ${before} before`);

  // With room again, the same blob goes in.
  await rm(filler);
  const again = await raw(strata.url, 'POST', `/v2/full/app/blobs/uploads/?digest=${digestOf(big)}`, {
    body: big,
  });
  assert.equal(again.status, 201);
});
