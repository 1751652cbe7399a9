import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import { mkdir, mkdtemp, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { type TestContext, test } from 'node:test';
import { waitFor } from '../../../test/helpers/process.ts';
import { digestOf } from '../../oci/digest.ts';
import { type ResolvedTag, TagFile } from './tag-file.ts';

const OCI_MANIFEST = 'application/vnd.oci.image.manifest.v1+json';

function tag(n: number): ResolvedTag {
  return {
    ref: `reg.test/app:${n}`,
    digest: digestOf(`m${n}`),
    mediaType: OCI_MANIFEST,
    size: 100 + n,
    at: n,
  };
}

async function dirFor(t: TestContext): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), 'tag-file-'));
  t.after(() => rm(dir, { recursive: true, force: true }));
  return dir;
}

test('tag file: what was written is loaded again, the most recent entries within the bound', async (t) => {
  const path = join(await dirFor(t), 'resolved-tags.json');
  const errors: string[] = [];
  const file = new TagFile(path, { maxEntries: 3, delayMs: 10, onError: (e, a) => errors.push(`${a} ${e}`) });
  assert.deepEqual(await file.load(), [], 'no file yet');
  let entries = [tag(1), tag(2)];
  file.changed(() => entries);
  entries = [tag(1), tag(2), tag(3), tag(4)];
  file.changed(() => entries);
  await file.flush();
  assert.deepEqual(await new TagFile(path, { maxEntries: 3 }).load(), [tag(2), tag(3), tag(4)]);
  // Written by the timer too, without a flush.
  entries = [tag(5)];
  file.changed(() => entries);
  await waitFor(async () => (await file.load()).length === 1, 10_000, { what: 'the timed write' });
  assert.deepEqual(await file.load(), [tag(5)]);
  assert.deepEqual(errors, []);
});

test('tag file: a file that does not check out is reported and left out, entry by entry', async (t) => {
  const dir = await dirFor(t);
  const path = join(dir, 'resolved-tags.json');
  const errors: string[] = [];
  const file = new TagFile(path, {
    maxEntries: 10,
    onError: (e, a) => errors.push(`${a}: ${(e as Error).message}`),
  });

  await writeFile(path, '{"not": "a list"');
  assert.deepEqual(await file.load(), []);
  assert.match(errors.pop() ?? '', /^read: .*resolved-tags\.json: /);

  await writeFile(path, JSON.stringify({ ref: 'x' }));
  assert.deepEqual(await file.load(), []);
  assert.match(errors.pop() ?? '', /not a list/);

  await writeFile(path, 'x'.repeat(10 * 1024 + 1));
  assert.deepEqual(await file.load(), []);
  assert.match(errors.pop() ?? '', /too large/);

  const bad: unknown[] = [
    { ...tag(1), digest: 'sha256:nothex' },
    { ...tag(1), ref: 'reg.test/app name:1' },
    { ...tag(1), size: -1 },
    { ...tag(1), size: 64 * 1024 * 1024 },
    { ...tag(1), at: 'yesterday' },
    { ...tag(1), mediaType: 7 },
    null,
    'reg.test/app:1',
  ];
  await writeFile(path, JSON.stringify([...bad, tag(2)]));
  assert.deepEqual(await file.load(), [tag(2)]);
  assert.equal(errors.length, 0);

  // A file that cannot be written (its directory is gone, and is not made again) is reported; a write
  // leaves no temp file.
  const writeErrors: string[] = [];
  const blocked = new TagFile(join(dir, 'gone', 'resolved-tags.json'), {
    maxEntries: 10,
    onError: (e, a) => writeErrors.push(`${a}: ${(e as NodeJS.ErrnoException).code}`),
  });
  blocked.changed(() => [tag(1)]);
  await blocked.flush();
  assert.deepEqual(writeErrors, ['write: ENOENT']);
  assert.equal(existsSync(join(dir, 'gone')), false);
  await mkdir(join(dir, 'ok'));
  const ok = new TagFile(join(dir, 'ok', 'resolved-tags.json'), { maxEntries: 10 });
  ok.changed(() => [tag(1)]);
  await ok.flush();
  assert.deepEqual(JSON.parse(await readFile(join(dir, 'ok', 'resolved-tags.json'), 'utf8')), [tag(1)]);
  assert.deepEqual(await readdir(join(dir, 'ok')), ['resolved-tags.json']);
});
