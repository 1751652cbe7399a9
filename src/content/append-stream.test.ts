import assert from 'node:assert/strict';
import { Readable } from 'node:stream';
import { describe, it } from 'node:test';
import { waitFor } from '../../test/helpers/process.ts';
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
    // The first chunk finds the disk idle and goes at once; the rest gather while writes land.
    assert.ok(sink.writes.length <= 4, `${sink.writes.length} writes`);
    assert.deepEqual(Buffer.concat(sink.writes), Buffer.concat(input));
  });

  it('writes what a slow source sends as it comes, not a batch later', async () => {
    const sink = recorder();
    const stream = new Readable({ read() {} });
    const done = appendStream(sink, stream);
    stream.push(Buffer.from('first'));
    // The source holds back the rest until the first bytes are on the sink (readers follow the ingest).
    await waitFor(() => sink.writes.length > 0, 10_000, { what: 'the first bytes on the sink' });
    assert.equal(Buffer.concat(sink.writes).toString(), 'first');
    stream.push(Buffer.from(' second'));
    stream.push(null);
    await done;
    assert.equal(Buffer.concat(sink.writes).toString(), 'first second');
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
    // The first chunk went at once; the refused one and the batch it joined are never written.
    assert.deepEqual(Buffer.concat(refused.writes), Buffer.alloc(10, 0));

    const broken = recorder();
    const stream = new Readable({ read() {} });
    stream.push(Buffer.from('abc'));
    setImmediate(() => stream.destroy(new Error('connection reset')));
    await assert.rejects(appendStream(broken, stream), /connection reset/);
    assert.equal(Buffer.concat(broken.writes).toString(), 'abc');
  });
});

describe('appendStream while a write is slow', () => {
  it('goes on reading up to the gather limit, then waits; the bytes stay in order', async () => {
    const writes: Buffer[] = [];
    let release: () => void = () => {};
    const firstWrite = new Promise<void>((r) => {
      release = r;
    });
    const sink = {
      write: async (cs: readonly Uint8Array[]) => {
        if (writes.length === 0) await firstWrite;
        writes.push(Buffer.concat(cs));
      },
    };
    const input = chunks(160, 64 * 1024); // 10 MiB
    let read = 0;
    async function* source() {
      for (const c of input) {
        read += c.byteLength;
        yield c;
      }
    }
    const done = appendStream(sink, Readable.from(source()));
    // The first write hangs: reading goes on past 4 MiB gathered behind it, but stops before everything.
    const deadline = Date.now() + 10_000;
    while (read < 4 << 20 && Date.now() < deadline) await new Promise((r) => setImmediate(r));
    for (let i = 0; i < 20; i++) await new Promise((r) => setImmediate(r));
    assert.ok(read >= 4 << 20, `read ${read} bytes while the first write hung`);
    assert.ok(read < 7 << 20, `read ${read} bytes: not bounded`);
    release();
    await done;
    assert.deepEqual(Buffer.concat(writes), Buffer.concat(input));
  });

  it('reports a failed write and writes nothing after it', async () => {
    let calls = 0;
    const sink = {
      write: async () => {
        calls++;
        throw new Error('disk full');
      },
    };
    await assert.rejects(appendStream(sink, Readable.from(chunks(80, 64 * 1024))), /disk full/);
    assert.equal(calls, 1);
  });
});
