import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import {
  chmod,
  lchown,
  link,
  lstat,
  lutimes,
  mkdir,
  mkdtemp,
  readdir,
  readlink,
  rm,
  symlink,
  writeFile,
} from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { promisify } from 'node:util';
import { diskUsage } from '../disk-usage.ts';
import { getXattrs, setXattr } from '../xattr.ts';
import { copyTree } from './copy-tree.ts';

const run = promisify(execFile);
const asRoot = process.getuid?.() === 0;
const T = 1_600_000_000;

describe('copyTree', () => {
  let work: string;
  let src: string;
  before(async () => {
    work = await mkdtemp(join(tmpdir(), 'copy-tree-'));
    src = join(work, 'src');
    await mkdir(join(src, 'd/e'), { recursive: true });
    await writeFile(join(src, 'd/file'), 'data');
    await link(join(src, 'd/file'), join(src, 'd/e/second-name'));
    await writeFile(join(src, 'suid'), '#!/bin/sh\n');
    if (asRoot) await lchown(join(src, 'suid'), 1000, 1001);
    await chmod(join(src, 'suid'), 0o4750);
    await symlink('/etc/passwd', join(src, 'abs'));
    await symlink('../../nowhere', join(src, 'd/dangling'));
    await run('mkfifo', [join(src, 'pipe')]);
    await chmod(join(src, 'd/e'), 0o1777);
    await lutimes(join(src, 'abs'), T, T + 1);
    await lutimes(join(src, 'd/file'), T, T + 2);
    await lutimes(join(src, 'd'), T, T + 3);
    await lutimes(src, T, T + 4);
  });
  after(async () => {
    await rm(work, { recursive: true, force: true });
  });

  test('keeps types, modes, owners, times, link targets and hardlink groups', async () => {
    const dst = join(work, 'dst');
    await mkdir(dst);
    const r = await copyTree(src, dst);
    assert.equal(r.skipped, 0);
    const pairs = ['', 'd', 'd/e', 'd/file', 'd/e/second-name', 'suid', 'abs', 'd/dangling', 'pipe'];
    for (const p of pairs) {
      const a = await lstat(join(src, p));
      const b = await lstat(join(dst, p));
      assert.equal(b.mode, a.mode, `${p} mode`);
      assert.equal(b.uid, a.uid, `${p} uid`);
      assert.equal(b.gid, a.gid, `${p} gid`);
      assert.equal(Math.floor(b.mtimeMs), Math.floor(a.mtimeMs), `${p} mtime`);
    }
    assert.equal(await readlink(join(dst, 'abs')), '/etc/passwd');
    assert.equal(await readlink(join(dst, 'd/dangling')), '../../nowhere');
    const f1 = await lstat(join(dst, 'd/file'));
    const f2 = await lstat(join(dst, 'd/e/second-name'));
    assert.equal(f1.ino, f2.ino, 'still one inode');
    assert.notEqual(f1.ino, (await lstat(join(src, 'd/file'))).ino, 'but not the source inode');
    assert.ok((await lstat(join(dst, 'pipe'))).isFIFO());
  });

  test('devices are copied as containerd copies them; sockets are skipped', {
    skip: !asRoot && 'needs root for mknod',
  }, async () => {
    const withDev = join(work, 'with-dev');
    await mkdir(withDev);
    await run('mknod', [join(withDev, 'null'), 'c', '1', '3']);
    await run('mknod', [join(withDev, 'loop9'), 'b', '7', '9']);
    await chmod(join(withDev, 'null'), 0o666);
    await writeFile(join(withDev, 'f'), 'x');
    await run('python3', [
      '-c',
      `import socket; socket.socket(socket.AF_UNIX).bind(${JSON.stringify(join(withDev, 'sock'))})`,
    ]);
    const dst = join(work, 'dev-dst');
    await mkdir(dst);
    const r = await copyTree(withDev, dst);
    assert.equal(r.skipped, 1, 'the socket');
    const nul = await lstat(join(dst, 'null'));
    assert.ok(nul.isCharacterDevice());
    assert.equal(nul.rdev, (await lstat(join(withDev, 'null'))).rdev);
    assert.equal(nul.mode & 0o7777, 0o666);
    const loop = await lstat(join(dst, 'loop9'));
    assert.ok(loop.isBlockDevice());
    assert.equal(loop.rdev, (await lstat(join(withDev, 'loop9'))).rdev);
    await assert.rejects(lstat(join(dst, 'sock')), { code: 'ENOENT' });
  });

  test('names that are not UTF-8 are copied byte for byte, fifos and links included', async () => {
    const odd = (s: string) => Buffer.concat([Buffer.from(s), Buffer.of(0xff, 0xfe)]);
    const at = (dir: string, ...names: Buffer[]) =>
      Buffer.concat([Buffer.from(dir), ...names.flatMap((n) => [Buffer.from('/'), n])]);
    const from = join(work, 'odd-src');
    await mkdir(from);
    await mkdir(at(from, odd('dir')));
    await writeFile(at(from, odd('dir'), odd('file')), 'bytes');
    await symlink(at(from, odd('dir'), odd('file')), at(from, odd('link')));
    await link(at(from, odd('dir'), odd('file')), at(from, odd('hard')));
    await run('python3', [
      '-c',
      `import os; os.mkfifo(bytes.fromhex(${JSON.stringify(at(from, odd('dir'), odd('pipe')).toString('hex'))}))`,
    ]);
    const dst = join(work, 'odd-dst');
    await mkdir(dst);
    await copyTree(from, dst);
    assert.deepEqual(
      (await readdir(Buffer.from(dst), { encoding: 'buffer' })).map((b) => b.toString('hex')).sort(),
      [odd('dir'), odd('hard'), odd('link')].map((b) => b.toString('hex')).sort(),
    );
    assert.ok((await lstat(at(dst, odd('dir'), odd('pipe')))).isFIFO());
    assert.equal(
      (await lstat(at(dst, odd('hard')))).ino,
      (await lstat(at(dst, odd('dir'), odd('file')))).ino,
    );
    assert.deepEqual(
      await readlink(at(dst, odd('link')), { encoding: 'buffer' }),
      at(from, odd('dir'), odd('file')),
    );
    assert.deepEqual(
      (await readdir(at(dst, odd('dir')), { encoding: 'buffer' })).map((b) => b.toString('hex')).sort(),
      [odd('file'), odd('pipe')].map((b) => b.toString('hex')).sort(),
    );
  });

  test('a missing source is an error, and an aborted copy stops', async () => {
    const dst = join(work, 'nothing');
    await mkdir(dst);
    await assert.rejects(copyTree(join(work, 'absent'), dst), /copying of parent failed/);
    const ac = new AbortController();
    ac.abort();
    const dst2 = join(work, 'aborted');
    await mkdir(dst2);
    await assert.rejects(copyTree(src, dst2, { signal: ac.signal }), { kind: 'Aborted' });
  });

  test('disk usage counts each inode once, root included', async () => {
    const u = await diskUsage(src);
    // root, d, d/e, d/file (two names), suid, abs, d/dangling, pipe
    assert.equal(u.inodes, 8);
    assert.ok(u.size >= 4096, `size ${u.size}`);
  });
});

describe('copyTree extended attributes', () => {
  test('a copy keeps every attribute of files and directories, including file capabilities', async () => {
    const work = await mkdtemp(join(tmpdir(), 'copy-tree-xattr-'));
    try {
      const src = join(work, 'src');
      await mkdir(join(src, 'bin'), { recursive: true });
      await writeFile(join(src, 'bin/ping'), 'p');
      await writeFile(join(src, 'bin/odd name\\'), 'o');
      const capability = Buffer.from('0100000200200000000000000000000000000000', 'hex');
      if (asRoot) await setXattr(join(src, 'bin/ping'), 'security.capability', capability);
      await setXattr(join(src, 'bin/ping'), 'user.note', Buffer.from([0x80, 0xff, 0]));
      await setXattr(join(src, 'bin/odd name\\'), 'user.q', Buffer.from('1'));
      await setXattr(join(src, 'bin'), 'user.dir', Buffer.from('d'));
      await mkdir(join(work, 'dst'));
      await copyTree(src, join(work, 'dst'));
      assert.deepEqual(await getXattrs(join(work, 'dst/bin/ping')), {
        ...(asRoot ? { 'security.capability': capability } : {}),
        'user.note': Buffer.from([0x80, 0xff, 0]),
      });
      assert.deepEqual(await getXattrs(join(work, 'dst/bin/odd name\\')), { 'user.q': Buffer.from('1') });
      assert.deepEqual(await getXattrs(join(work, 'dst/bin')), { 'user.dir': Buffer.from('d') });
    } finally {
      await rm(work, { recursive: true, force: true });
    }
  });
});
