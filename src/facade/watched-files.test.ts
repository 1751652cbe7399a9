import assert from 'node:assert/strict';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { WatchedFiles } from './watched-files.ts';

test('a refresh asked for while a reload is reading sees a change made before it was asked', async (t) => {
  const dir = await mkdtemp(join(tmpdir(), 'strata-watched-'));
  t.after(() => rm(dir, { recursive: true, force: true }));
  const file = join(dir, 'value');
  await writeFile(file, '1');
  // The next load stops after reading the file, until released.
  let hold: { entered: () => void; release: Promise<void> } | undefined;
  const w = await WatchedFiles.open([file], {
    what: 'value',
    watch: false,
    settleMs: 0,
    load: async () => {
      const text = await readFile(file, 'utf8');
      const h = hold;
      hold = undefined;
      if (h) {
        h.entered();
        await h.release;
      }
      return text;
    },
  });
  let release!: () => void;
  const entered = new Promise<void>((resolve) => {
    hold = { entered: resolve, release: new Promise<void>((r) => (release = r)) };
  });
  await writeFile(file, '22');
  const first = w.refresh();
  await entered;
  // Changed after the running reload read the file (a watcher event or SIGHUP now).
  await writeFile(file, '333');
  const second = w.refresh();
  release();
  await Promise.all([first, second]);
  assert.equal(w.value, '333');
  w.close();
});
