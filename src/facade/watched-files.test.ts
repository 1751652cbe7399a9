import assert from 'node:assert/strict';
import { chmod, mkdir, mkdtemp, readFile, readlink, rename, rm, symlink, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { asUnprivileged, waitFor } from '../../test/helpers/process.ts';
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

test('a Kubernetes-style mount: swapping the ..data symlink reloads; a bad version keeps the old one', async (t) => {
  const dir = await mkdtemp(join(tmpdir(), 'strata-watched-'));
  t.after(() => rm(dir, { recursive: true, force: true }));
  // What the kubelet makes: a timestamped directory, `..data` pointing at it, the file through `..data`.
  let n = 0;
  const publish = async (text: string): Promise<void> => {
    const stamp = `..2026_12_07_00_00_0${n++}`;
    await mkdir(join(dir, stamp));
    await writeFile(join(dir, stamp, 'htpasswd'), text);
    const old = await readlink(join(dir, '..data')).catch(() => undefined);
    await symlink(stamp, join(dir, '..data_tmp'));
    await rename(join(dir, '..data_tmp'), join(dir, '..data'));
    if (old) await rm(join(dir, old), { recursive: true });
  };
  await publish('one');
  await symlink('..data/htpasswd', join(dir, 'htpasswd'));
  const errors: unknown[] = [];
  const w = await WatchedFiles.open([join(dir, 'htpasswd')], {
    what: 'htpasswd',
    settleMs: 0,
    parse: ([b]) => {
      const text = b!.toString('utf8');
      if (text === 'bad') throw new Error('a bad version');
      return text;
    },
    onReloadError: (err) => errors.push(err),
  });
  t.after(() => w.close());
  assert.equal(w.value, 'one');
  await publish('two');
  await waitFor(() => w.value === 'two', 10_000, { what: 'the swapped version' });
  await publish('bad');
  await waitFor(() => errors.length > 0, 10_000, { what: 'the bad version refused' });
  assert.equal(w.value, 'two');
  await publish('three');
  await waitFor(() => w.value === 'three', 10_000, { what: 'the version after the bad one' });
});

/** A text file read again by refresh() alone (as on SIGHUP), its refused versions pushed to `errors`. */
function onRefresh(file: string, errors: unknown[]): Promise<WatchedFiles<string>> {
  return WatchedFiles.open([file], {
    what: 'value',
    watch: false,
    settleMs: 0,
    parse: ([b]) => b!.toString('utf8'),
    onReloadError: (err) => errors.push(err),
  });
}

test('a file that is gone is reported once however often it is looked at, and read again when it is back', async (t) => {
  const dir = await mkdtemp(join(tmpdir(), 'strata-watched-'));
  t.after(() => rm(dir, { recursive: true, force: true }));
  const file = join(dir, 'value');
  await writeFile(file, 'one');
  const errors: unknown[] = [];
  const w = await onRefresh(file, errors);
  t.after(() => w.close());
  // Deleted before being written again: the fixed-spec provider refreshes on every request meanwhile.
  await rm(file);
  for (let i = 0; i < 3; i++) await w.refresh();
  assert.equal(errors.length, 1, 'reported once');
  assert.equal(w.value, 'one');
  await writeFile(file, 'two');
  await w.refresh();
  assert.equal(w.value, 'two');
  await rm(file);
  await w.refresh();
  assert.equal(errors.length, 2, 'gone again is news again');
});

test('a version refused because it could not be read is read again once its mode is fixed', async (t) => {
  const dir = await mkdtemp(join(tmpdir(), 'strata-watched-'));
  t.after(() => rm(dir, { recursive: true, force: true }));
  await chmod(dir, 0o755);
  const file = join(dir, 'value');
  await writeFile(file, 'one');
  await chmod(file, 0o644);
  const errors: unknown[] = [];
  const w = await asUnprivileged(() => onRefresh(file, errors));
  t.after(() => w.close());
  // A config manager writes the new version with a mode the server cannot read, then fixes the mode.
  await writeFile(file, 'two');
  await chmod(file, 0o600);
  await asUnprivileged(() => w.refresh());
  assert.equal(errors.length, 1);
  assert.equal(w.value, 'one');
  await chmod(file, 0o644);
  await asUnprivileged(() => w.refresh());
  assert.equal(w.value, 'two', 'SIGHUP after the fix reads it');
});

test('a version refused for a reason outside the file is read again by reread() (SIGHUP), not by refresh()', async (t) => {
  const dir = await mkdtemp(join(tmpdir(), 'strata-watched-'));
  t.after(() => rm(dir, { recursive: true, force: true }));
  const file = join(dir, 'layer');
  await writeFile(file, 'v1');
  // As a static layer read in while the cache's disk fails: the file is fine, storing it is not.
  let diskFails = false;
  const errors: unknown[] = [];
  const w = await WatchedFiles.open([file], {
    what: 'layer',
    watch: false,
    settleMs: 0,
    onReloadError: (err) => errors.push(err),
    load: async () => {
      if (diskFails) throw new Error('cache disk: EROFS');
      return readFile(file, 'utf8');
    },
  });
  await writeFile(file, 'v2');
  diskFails = true;
  await w.refresh();
  assert.equal(w.value, 'v1');
  assert.equal(errors.length, 1);
  diskFails = false;
  // The file has not changed since it was refused: a refresh (on use, a watcher) leaves it be.
  await w.refresh();
  assert.equal(w.value, 'v1');
  assert.equal(errors.length, 1);
  await w.reread();
  assert.equal(w.value, 'v2');
  // A version refused again for the same reason is reported once; the value stays.
  await writeFile(file, 'v3');
  diskFails = true;
  await w.reread();
  await w.reread();
  assert.equal(w.value, 'v2');
  assert.equal(errors.length, 2);
});
