import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { mkdtemp, rm, truncate, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { errorKind } from '../errors.ts';
import { FileRange } from './file-range.ts';

describe('FileRange', () => {
  let dir: string;
  let file: string;
  const data = randomBytes(3 * 1024 + 17);

  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'strata-file-range-'));
    file = join(dir, 'blob');
    await writeFile(file, data);
  });
  after(() => rm(dir, { recursive: true, force: true }));

  async function readAll(r: FileRange): Promise<Buffer> {
    const chunks: Buffer[] = [];
    for await (const c of r) chunks.push(c as Buffer);
    return Buffer.concat(chunks);
  }

  async function pumpAll(r: FileRange): Promise<{ body: Buffer; chunks: number; distinct: number }> {
    const out: Buffer[] = [];
    const seen = new Set<ArrayBufferLike>();
    await r.pump(async (c) => {
      seen.add(c.buffer);
      out.push(Buffer.from(c)); // a copy: the chunk's buffer is reused
    });
    return { body: Buffer.concat(out), chunks: out.length, distinct: seen.size };
  }

  test('as a Readable: whole file and ranges, in chunks of the given size', async () => {
    assert.deepEqual(await readAll(new FileRange(file, 0, data.length, 1000)), data);
    assert.deepEqual(await readAll(new FileRange(file, 5, 2500, 1000)), data.subarray(5, 2500));
    assert.deepEqual(await readAll(new FileRange(file, 7, 7)), Buffer.alloc(0));
  });

  test('pump: same bytes, two buffers reused, stream closed afterwards', async () => {
    const r = new FileRange(file, 0, data.length, 1000);
    const closed = new Promise((resolve) => r.once('close', resolve));
    const { body, chunks, distinct } = await pumpAll(r);
    assert.deepEqual(body, data);
    assert.equal(chunks, 4);
    assert.equal(distinct, 2);
    await closed;
    assert.deepEqual((await pumpAll(new FileRange(file, 100, 101, 1000))).body, data.subarray(100, 101));
    assert.equal((await pumpAll(new FileRange(file, 9, 9))).chunks, 0);
  });

  test('a failed write stops the pump with that error and closes the file', async () => {
    const r = new FileRange(file, 0, data.length, 1000);
    let writes = 0;
    await assert.rejects(
      r.pump(async () => {
        writes++;
        if (writes === 2) throw new Error('client went away');
      }),
      /client went away/,
    );
    assert.ok(writes <= 3);
    assert.equal(r.destroyed, true);
  });

  test('a file shorter than the range is DataLoss on both paths, never a short success', async () => {
    const short = join(dir, 'short');
    await writeFile(short, data);
    await truncate(short, 2000);
    await assert.rejects(
      readAll(new FileRange(short, 0, data.length, 1000)),
      (e) => errorKind(e) === 'DataLoss',
    );
    await assert.rejects(
      pumpAll(new FileRange(short, 0, data.length, 1000)),
      (e) => errorKind(e) === 'DataLoss',
    );
  });

  test('a missing file fails open()', async () => {
    const r = new FileRange(join(dir, 'nope'), 0, 10);
    await assert.rejects(r.open(), /ENOENT/);
    r.destroy();
  });
});
