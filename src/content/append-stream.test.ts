import assert from 'node:assert/strict';
import { Readable } from 'node:stream';
import { describe, it } from 'node:test';
import { appendStream } from './append-stream.ts';

/** A sink that records each write's chunks. */
function recorder() {
  const writes: Buffer[] = [];
  return {
    writes,
    write: async (chunks: readonly Uint8Array[]) => {
      await new Promise((r) => setImmediate(r));
      writes.push(Buffer.concat(chunks));
    },
  };
}

const chunks = (n: number, size: number) => Array.from({ length: n }, (_, i) => Buffer.alloc(size, i % 251));

describe('appendStream', () => {
  it('writes socket-sized chunks in a few big writes, in order', async () => {
    const sink = recorder();
    const input = chunks(40, 64 * 1024); // 2.5 MiB
    await appendStream(sink, Readable.from(input));
    assert.ok(sink.writes.length <= 3, `${sink.writes.length} writes`);
    assert.deepEqual(Buffer.concat(sink.writes), Buffer.concat(input));
  });

  it('drops the batch a check refuses, and keeps what a failed stream delivered', async () => {
    const refused = recorder();
    let seen = 0;
    await assert.rejects(
      appendStream(refused, Readable.from(chunks(3, 10)), () => {
        if (++seen === 3) throw new Error('too many');
      }),
      /too many/,
    );
    assert.equal(Buffer.concat(refused.writes).length, 0);

    const broken = recorder();
    const stream = new Readable({ read() {} });
    stream.push(Buffer.from('abc'));
    setImmediate(() => stream.destroy(new Error('connection reset')));
    await assert.rejects(appendStream(broken, stream), /connection reset/);
    assert.equal(Buffer.concat(broken.writes).toString(), 'abc');
  });
});
