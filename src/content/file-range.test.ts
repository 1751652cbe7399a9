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

  test('as a Readable: whole file and ranges, in chunks of the given size', async () => {
    assert.deepEqual(await readAll(new FileRange(file, 0, data.length, 1000)), data);
    assert.deepEqual(await readAll(new FileRange(file, 5, 2500, 1000)), data.subarray(5, 2500));
    assert.deepEqual(await readAll(new FileRange(file, 7, 7)), Buffer.alloc(0));
  });

  test('a file shorter than the range is DataLoss, never a short success', async () => {
    const short = join(dir, 'short');
    await writeFile(short, data);
    await truncate(short, 2000);
    await assert.rejects(
      readAll(new FileRange(short, 0, data.length, 1000)),
      (e) => errorKind(e) === 'DataLoss',
    );
  });

  test('a missing file fails open()', async () => {
    const r = new FileRange(join(dir, 'nope'), 0, 10);
    await assert.rejects(r.open(), /ENOENT/);
    r.destroy();
  });
});
