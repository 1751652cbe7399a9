import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { Readable } from 'node:stream';
import { test } from 'node:test';
import { waitFor } from '../../../test/helpers/process.ts';
import { isDataLoss, notFound } from '../../errors.ts';
import type { Blob } from '../../oci/blob.ts';
import { digestOf } from '../../oci/digest.ts';
import { pacedRead } from './paced-read.ts';

/** A source over `bytes` (in 16 KiB chunks) that records each response's start and whether it is open. */
function source(bytes: Buffer, digest = digestOf(bytes), ignoresRange = false) {
  const responses: { offset: number; body: Readable }[] = [];
  const sent = { bytes: 0 };
  const blob: Blob = {
    descriptor: { mediaType: 'application/octet-stream', digest, size: bytes.length },
    open: async (o = {}) => {
      const offset = o.range?.offset ?? 0;
      const end = o.range?.length === undefined ? bytes.length : offset + o.range.length;
      if (ignoresRange && offset > 0) {
        // As the registry client does with such a server: the prefix is read and dropped.
        sent.bytes += offset;
        o.onRangeIgnored?.();
      }
      async function* chunks() {
        for (let at = offset; at < end; at += 16 << 10) {
          const chunk = bytes.subarray(at, Math.min(end, at + (16 << 10)));
          sent.bytes += chunk.length;
          yield chunk;
        }
      }
      const body = Readable.from(chunks(), { objectMode: false });
      responses.push({ offset, body });
      return body;
    },
  };
  return { blob, responses, sent };
}

async function readAll(s: Readable): Promise<Buffer> {
  const chunks: Buffer[] = [];
  for await (const c of s) chunks.push(c as Buffer);
  return Buffer.concat(chunks);
}

test('a reader that stops lets go of the source response once the read-ahead is full, and gets the rest later', async () => {
  const bytes = randomBytes(1 << 20);
  const { blob, responses } = source(bytes);
  const limit = 128 << 10;
  const s = await pacedRead(blob, 0, bytes.length, undefined, limit);
  // Nobody reads: the first response fills the read-ahead and is let go of.
  await waitFor(() => responses[0]!.body.destroyed, 5000, { what: 'the first response let go of' });
  assert.equal(responses.length, 1);
  assert.deepEqual(await readAll(s), bytes);
  assert.ok(responses.length > 1, 'asked again from where it stopped');
  assert.ok(responses.every((r, i) => i === 0 || r.offset > responses[i - 1]!.offset));
});

test('a range is served, a refused source fails the call, and wrong bytes fail the whole read', async () => {
  const bytes = randomBytes(300_000);
  const { blob } = source(bytes);
  assert.deepEqual(
    await readAll(await pacedRead(blob, 1000, 250_000, undefined, 64 << 10)),
    bytes.subarray(1000, 250_000),
  );
  assert.deepEqual(await readAll(await pacedRead(blob, 5, 5)), Buffer.alloc(0));
  const refused: Blob = {
    descriptor: blob.descriptor,
    open: async () => {
      throw notFound('gone');
    },
  };
  await assert.rejects(pacedRead(refused, 0, bytes.length), /gone/);
  const wrong = source(bytes, digestOf(Buffer.from('other'))).blob;
  let received = 0;
  await assert.rejects(
    (async () => {
      for await (const c of await pacedRead(wrong, 0, bytes.length, undefined, 64 << 10))
        received += (c as Buffer).length;
    })(),
    (err) => isDataLoss(err),
  );
  // The chunk that would complete the body is held back: a client counting to Content-Length never
  // sees a whole body of wrong bytes.
  assert.ok(received < bytes.length, `${received} of ${bytes.length} bytes passed`);
});

test('readers together hold no more than the shared budget, and each still gets its whole blob', async () => {
  const bytes = randomBytes(4 << 20);
  const budget = { max: 256 << 10, held: 0 };
  const sources = [source(bytes), source(bytes), source(bytes)];
  // Nobody reads yet: each fills until the budget is spent, then lets go of its response.
  const streams = await Promise.all(
    sources.map((s) => pacedRead(s.blob, 0, bytes.length, undefined, 2 << 20, budget)),
  );
  await waitFor(() => sources.every((s) => s.responses.every((r) => r.body.destroyed)), 5000, {
    what: 'every response let go of',
  });
  // Each reader stopped near the budget, not at its own 2 MiB read-ahead. The sources sent a little more
  // than the readers hold: what each response had buffered when it was let go of (under 256 KiB here).
  const sent = sources.reduce((n, s) => n + s.sent.bytes, 0);
  assert.ok(sent <= budget.max + 3 * (256 << 10), `sent ${sent} bytes for a budget of ${budget.max}`);
  assert.ok(budget.held <= budget.max + 3 * (16 << 10), `held ${budget.held}`);
  for (const s of streams) assert.deepEqual(await readAll(s), bytes);
  assert.equal(budget.held, 0, 'all given back');
});

test('a source that ignores Range is not asked again: the reader holds on to its response and pauses it', async () => {
  const bytes = randomBytes(1 << 20);
  const { blob, responses, sent } = source(bytes, digestOf(bytes), true);
  const limit = 64 << 10;
  const s = await pacedRead(blob, 0, bytes.length, undefined, limit);
  await waitFor(() => responses[0]!.body.destroyed, 5000, { what: 'the first response let go of' });
  // A slow client: one chunk at a time, with pauses, so the read-ahead fills again and again.
  const chunks: Buffer[] = [];
  for await (const c of s) {
    chunks.push(c as Buffer);
    await new Promise((r) => setImmediate(r));
  }
  assert.deepEqual(Buffer.concat(chunks), bytes);
  // The first response, and the one that showed the source sends everything; not one per read-ahead.
  assert.equal(responses.length, 2);
  assert.ok(sent.bytes <= 2 * bytes.length, `the source sent ${sent.bytes} bytes`);
});
