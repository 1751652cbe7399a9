import assert from 'node:assert/strict';
import { lstat, mkdir, mkdtemp, rm, symlink, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { isInvalidArgument } from '../../errors.ts';
import { resolveDirInRoot } from './resolve.ts';

describe('resolveDirInRoot', () => {
  let base: string;
  let root: string;
  before(async () => {
    base = await mkdtemp(join(tmpdir(), 'strata-resolve-'));
    root = join(base, 'root');
    await mkdir(join(root, 'usr/lib'), { recursive: true });
    await mkdir(join(base, 'outside'));
    await writeFile(join(root, 'file'), 'f');
    await symlink('usr/lib', join(root, 'lib'));
    await symlink('/usr', join(root, 'abs'));
    await symlink('../../../../..', join(root, 'up'));
    await symlink(join(base, 'outside'), join(root, 'host'));
    await symlink('loop2', join(root, 'loop1'));
    await symlink('loop1', join(root, 'loop2'));
    await symlink('file', join(root, 'tofile'));
  });
  after(async () => {
    await rm(base, { recursive: true, force: true });
  });
  const resolve = (p: string, create = false) =>
    resolveDirInRoot(root, p === '' ? [] : p.split('/'), { create });

  test('plain directories resolve to themselves', async () => {
    assert.deepEqual(await resolve(''), []);
    assert.deepEqual(await resolve('usr/lib'), ['usr', 'lib']);
  });

  test('symlinks are followed inside the root: relative, absolute, and above the root', async () => {
    assert.deepEqual(await resolve('lib'), ['usr', 'lib']);
    assert.deepEqual(await resolve('abs/lib'), ['usr', 'lib']);
    assert.deepEqual(await resolve('up'), []);
    assert.deepEqual(await resolve('up/usr'), ['usr']);
    assert.deepEqual(await resolve('usr/lib/../..'), []);
  });

  test('a symlink to a host directory is re-rooted, missing parts are created inside the root', async () => {
    assert.equal(await resolve('host'), undefined);
    const created: string[] = [];
    const got = await resolveDirInRoot(root, ['host', 'x'], {
      create: true,
      onCreate: (r) => created.push(r),
    });
    const inside = [...join(base, 'outside').split('/').filter(Boolean), 'x'];
    assert.deepEqual(got, inside);
    assert.ok((await lstat(join(root, ...inside))).isDirectory());
    assert.equal((await lstat(join(root, inside[0]!))).mode & 0o777, 0o755);
    assert.deepEqual(
      created,
      inside.map((_, i) => inside.slice(0, i + 1).join('/')),
    );
  });

  test('loops and non-directories are InvalidArgument', async () => {
    await assert.rejects(resolve('loop1'), isInvalidArgument);
    await assert.rejects(resolve('file'), isInvalidArgument);
    await assert.rejects(resolve('tofile/x', true), isInvalidArgument);
  });
});
