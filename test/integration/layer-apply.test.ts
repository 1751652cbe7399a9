// The layer applier and differ on the real file system, as root (owners, devices): layer sequences,
// compression, diff/apply round trips, and a corpus of hostile archives that must not touch anything
// outside the root.
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { createReadStream } from 'node:fs';
import {
  chmod,
  chown,
  link,
  lstat,
  mkdir,
  mkdtemp,
  readdir,
  readFile,
  readlink,
  rm,
  stat,
  symlink,
  unlink,
  utimes,
  writeFile,
} from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { Readable } from 'node:stream';
import { buffer } from 'node:stream/consumers';
import { after, before, describe, test } from 'node:test';
import { promisify } from 'node:util';
import { gunzipSync, gzipSync, zstdCompressSync } from 'node:zlib';
import { dataLoss, isDataLoss, isInvalidArgument } from '../../src/errors.ts';
import { digestOf } from '../../src/oci/digest.ts';
import { MediaType } from '../../src/oci/media-types.ts';
import { applyLayer } from '../../src/snapshots/apply/apply-layer.ts';
import type { ApplyOptions, ApplyResult } from '../../src/snapshots/apply/apply-options.ts';
import { fsPath } from '../../src/snapshots/byte-names.ts';
import { diffDirectories, packDirectory } from '../../src/snapshots/diff/diff-directories.ts';
import { dumpTree, getXattrs } from '../../src/snapshots/xattr.ts';
import { type LayerEntry, makeLayer, type Node, snapshotTree, T0 } from '../fixtures/hostile-layers/build.ts';
import { imageTools } from '../helpers/images.ts';

const run = promisify(execFile);
const TARTOOL = new URL('../fixtures/layer-fidelity/tartool.py', import.meta.url).pathname;
const asRoot = process.getuid?.() === 0;

let work: string;
before(async () => {
  work = await mkdtemp(join(tmpdir(), 'strata-layer-apply-'));
});
after(async () => {
  await rm(work, { recursive: true, force: true });
});

let counter = 0;
async function freshDir(label: string): Promise<string> {
  const d = join(work, `${label}-${++counter}`);
  await mkdir(d);
  return d;
}

async function apply(root: string, tarBytes: Buffer, opts?: ApplyOptions): Promise<ApplyResult> {
  return applyLayer(root, Readable.from([tarBytes]), opts);
}

const sha256hex = (b: Buffer | string) => createHash('sha256').update(b).digest('hex');

describe('applyLayer: a sequence of layers', { skip: !asRoot && 'needs root (owners, devices)' }, () => {
  test('whiteouts, opaque dirs, replacements, links, owners, modes and mtimes come out exactly', async () => {
    const root = await freshDir('seq');
    const l1: LayerEntry[] = [
      { name: 'etc/', type: 'directory', mtime: T0 + 1 },
      { name: 'etc/passwd', content: 'root:x:0:0\n', mtime: T0 + 2 },
      { name: 'etc/group', content: 'root:x:0:\n', mode: 0o600, mtime: T0 + 3 },
      { name: 'etc/localtime', type: 'symlink', linkname: '/usr/share/zoneinfo/UTC', mtime: T0 + 4 },
      { name: 'usr/', type: 'directory', mtime: T0 + 5 },
      { name: 'usr/bin/', type: 'directory', mode: 0o755, mtime: T0 + 6 },
      {
        name: 'usr/bin/tool',
        content: '#!/bin/sh\necho hi\n',
        mode: 0o4755,
        uid: 1000,
        gid: 1001,
        mtime: T0 + 7,
      },
      { name: 'usr/bin/tool2', type: 'link', linkname: 'usr/bin/tool', mtime: T0 + 7 },
      { name: 'usr/bin/rel', type: 'symlink', linkname: '../../etc/passwd', uid: 5, gid: 6, mtime: T0 + 8 },
      { name: 'opt/', type: 'directory', mode: 0o1777, mtime: T0 + 9 },
      { name: 'opt/a', content: 'a', mtime: T0 + 10 },
      { name: 'opt/sub/', type: 'directory', mtime: T0 + 11 },
      { name: 'opt/sub/c', content: 'c', mtime: T0 + 12 },
      { name: 'var/', type: 'directory', mtime: T0 + 13 },
      { name: 'var/x', content: 'x', mtime: T0 + 14 },
      { name: 'var/y', content: 'y', mtime: T0 + 14 },
      { name: 'replace-me', content: 'file first', mtime: T0 + 15 },
      { name: 'dirtofile/', type: 'directory', mtime: T0 + 16 },
      { name: 'dirtofile/child', content: 'child', mtime: T0 + 16 },
      { name: 'pipe', type: 'fifo', mode: 0o640, mtime: T0 + 17 },
      { name: 'zero', content: '', mode: 0, mtime: T0 + 18 },
      { name: './', type: 'directory', mtime: T0 },
    ];
    const tar1 = await makeLayer(l1);
    const r1 = await apply(root, tar1);
    assert.equal(r1.diffId, digestOf(tar1));
    assert.equal(r1.size, tar1.length);
    assert.equal(r1.entries, l1.length);
    assert.equal(r1.skipped.root, 1);

    const l2: LayerEntry[] = [
      { name: 'etc/', type: 'directory', mtime: T0 + 101 },
      { name: 'etc/.wh.passwd' },
      { name: 'opt/', type: 'directory', mode: 0o755, mtime: T0 + 102 },
      // Written before the opaque marker, still kept: it comes from this layer.
      { name: 'opt/new', content: 'new', mtime: T0 + 103 },
      { name: 'opt/.wh..wh..opq' },
      { name: 'opt/sub/', type: 'directory', mtime: T0 + 104 },
      { name: 'opt/sub/d', content: 'd', mtime: T0 + 105 },
      { name: 'var/', type: 'directory', mtime: T0 + 106 },
      { name: 'var/.wh.x' },
      // A whiteout of something this same layer writes leaves the new copy alone.
      { name: 'var/y', content: 'y2', mtime: T0 + 107 },
      { name: 'var/.wh.y' },
      { name: 'replace-me/', type: 'directory', mode: 0o700, mtime: T0 + 108 },
      { name: 'replace-me/inside', content: 'inside', mtime: T0 + 109 },
      { name: 'dirtofile', content: 'now a file', mtime: T0 + 110 },
      { name: 'usr/bin/', type: 'directory', mtime: T0 + 111 },
      { name: 'usr/bin/tool', content: 'replaced', mode: 0o755, mtime: T0 + 111 },
      { name: '.wh.zero' },
      { name: '.wh..wh.plnk/123', content: 'aufs' },
    ];
    const tar2 = await makeLayer(l2);
    const r2 = await apply(root, gzipSync(tar2));
    assert.equal(r2.diffId, digestOf(tar2));
    assert.equal(r2.skipped['aufs-meta'], 1);

    const l3: LayerEntry[] = [
      { name: 'replace-me', content: 'file again', mode: 0o640, mtime: T0 + 201 },
      { name: 'newdir/deeper/', type: 'directory', mtime: T0 + 202 },
    ];
    const tar3 = await makeLayer(l3);
    const r3 = await apply(root, zstdCompressSync(tar3));
    assert.equal(r3.diffId, digestOf(tar3));
    assert.equal(r3.size, tar3.length);

    const tree = await snapshotTree(root);
    const f = (content: string, mtime: number, mode = 0o644, uid = 0, gid = 0, linkGroup?: string) => ({
      type: 'file',
      mode,
      uid,
      gid,
      mtime,
      size: Buffer.byteLength(content),
      sha256: sha256hex(content),
      ...(linkGroup ? { linkGroup } : {}),
    });
    const d = (mtime: number, mode = 0o755) => ({ type: 'dir', mode, uid: 0, gid: 0, mtime });
    const newdir = tree.newdir;
    assert.ok(newdir && newdir.type === 'dir' && newdir.mode === 0o755, 'implicit parent created 0755');
    assert.deepEqual(tree, {
      dirtofile: f('now a file', T0 + 110),
      etc: d(T0 + 101),
      'etc/group': f('root:x:0:\n', T0 + 3, 0o600),
      'etc/localtime': {
        type: 'symlink',
        mode: 0,
        uid: 0,
        gid: 0,
        mtime: T0 + 4,
        target: '/usr/share/zoneinfo/UTC',
      },
      newdir: { ...d(newdir.mtime) },
      'newdir/deeper': d(T0 + 202),
      opt: d(T0 + 102),
      'opt/new': f('new', T0 + 103),
      'opt/sub': d(T0 + 104),
      'opt/sub/d': f('d', T0 + 105),
      pipe: { type: 'fifo', mode: 0o640, uid: 0, gid: 0, mtime: T0 + 17 },
      'replace-me': f('file again', T0 + 201, 0o640),
      usr: d(T0 + 5),
      'usr/bin': d(T0 + 111),
      'usr/bin/rel': { type: 'symlink', mode: 0, uid: 5, gid: 6, mtime: T0 + 8, target: '../../etc/passwd' },
      'usr/bin/tool': f('replaced', T0 + 111, 0o755),
      // The link's header (mode 0644, root) was applied to the inode last, as containerd does.
      'usr/bin/tool2': f('#!/bin/sh\necho hi\n', T0 + 7),
      var: d(T0 + 106),
      'var/y': f('y2', T0 + 107),
    });
  });

  test('a hardlink group keeps one inode', async () => {
    const root = await freshDir('links');
    await apply(
      root,
      await makeLayer([
        { name: 'a', content: 'shared', mode: 0o600, uid: 7, gid: 8 },
        { name: 'b', type: 'link', linkname: 'a', mode: 0o600, uid: 7, gid: 8 },
        { name: 'd/c', type: 'link', linkname: '/a', mode: 0o640, uid: 7, gid: 9 },
        { name: 's', type: 'symlink', linkname: 'a' },
        { name: 'hs', type: 'link', linkname: 's' },
      ]),
    );
    const [a, b, c, s, hs] = await Promise.all(['a', 'b', 'd/c', 's', 'hs'].map((n) => lstat(join(root, n))));
    assert.equal(a!.nlink, 3);
    assert.equal(b!.ino, a!.ino);
    assert.equal(c!.ino, a!.ino);
    assert.equal(a!.uid, 7);
    // Each link's header is applied to the shared inode; the last one written decides, as in containerd.
    assert.equal(a!.gid, 9);
    assert.equal(a!.mode & 0o7777, 0o640);
    assert.ok(hs!.isSymbolicLink(), 'a hardlink to a symlink links the symlink itself');
    assert.equal(hs!.ino, s!.ino);
  });

  test('devices are skipped unless allowed, then created', async () => {
    const layer = await makeLayer([
      { name: 'dev/', type: 'directory' },
      { name: 'dev/null', type: 'character-device', devmajor: 1, devminor: 3, mode: 0o666 },
      { name: 'dev/loop9', type: 'block-device', devmajor: 7, devminor: 9, mode: 0o660, gid: 6 },
    ]);
    const skippedRoot = await freshDir('nodev');
    const seen: string[] = [];
    const r = await apply(skippedRoot, layer, { onSkip: (kind, name) => seen.push(`${kind}:${name}`) });
    assert.equal(r.skipped.device, 2);
    assert.deepEqual(seen, ['device:dev/null', 'device:dev/loop9']);
    assert.deepEqual(Object.keys(await snapshotTree(skippedRoot)), ['dev']);

    const devRoot = await freshDir('dev');
    const r2 = await apply(devRoot, layer, { allowDevices: true });
    assert.equal(r2.skipped.device, 0);
    const tree = await snapshotTree(devRoot);
    assert.equal(tree['dev/null']?.type, 'char');
    assert.equal(tree['dev/null']?.mode, 0o666);
    assert.equal(tree['dev/null']?.rdev, (await stat('/dev/null')).rdev);
    assert.equal(tree['dev/loop9']?.type, 'block');
    assert.equal(tree['dev/loop9']?.gid, 6);
  });

  test("device numbers beyond what Linux encodes are refused as the layer's fault", async () => {
    /** A device entry, its number fields written here: tar-stream keeps them to six octal digits. */
    const device = async (devmajor: number, devminor: number) => {
      const layer = await makeLayer([{ name: 'd', type: 'character-device' }]);
      layer.write(`${devmajor.toString(8).padStart(7, '0')}\0`, 329, 'latin1');
      layer.write(`${devminor.toString(8).padStart(7, '0')}\0`, 337, 'latin1');
      layer.fill(0x20, 148, 156);
      let sum = 0;
      for (let i = 0; i < 512; i++) sum += layer[i]!;
      layer.write(`${sum.toString(8).padStart(6, '0')}\0 `, 148, 'latin1');
      return layer;
    };
    // 12 bits of major, 20 of minor: the largest is made, one more is InvalidArgument, not Internal.
    const root = await freshDir('dev-max');
    await apply(root, await device(4095, 1048575), { allowDevices: true });
    const made = await lstat(join(root, 'd'));
    assert.ok(made.isCharacterDevice());
    assert.equal(made.rdev, 0xffff_ffff);
    for (const [major, minor] of [
      [4096, 0],
      [0, 1048576],
    ] as const) {
      await assert.rejects(
        apply(await freshDir('dev-over'), await device(major, minor), { allowDevices: true }),
        (err: Error) => isInvalidArgument(err) && /device number/.test(err.message),
      );
    }
  });

  test('xattrs are set (refused ones counted), PAX long names and big ids are honoured, id maps apply', async () => {
    const root = await freshDir('pax');
    const long = `${'d'.repeat(120)}/${'f'.repeat(150)}`;
    // A version-2 file capability granting cap_net_raw (bit 13) permitted and effective.
    const capability = Buffer.from('0100000200200000000000000000000000000000', 'hex');
    const r = await apply(
      root,
      await makeLayer([
        { name: 'bad-cap', content: 'x', pax: { 'SCHILY.xattr.security.capability': 'abc' } },
        {
          name: 'ping',
          content: 'p',
          mode: 0o755,
          pax: {
            'SCHILY.xattr.security.capability': capability.toString('latin1'),
            'SCHILY.xattr.user.note': 'hello',
          },
        },
        { name: long, content: 'long' },
        { name: 'big', content: 'b', pax: { uid: '3000000', gid: '3000001' } },
        { name: 'mapped', content: 'm', uid: 10, gid: 20 },
      ]),
      {
        uidMap: [{ containerId: 0, hostId: 100000, size: 5000000 }],
        gidMap: [{ containerId: 0, hostId: 200000, size: 5000000 }],
      },
    );
    assert.equal(r.skipped.xattr, 1); // the kernel refuses a malformed capability
    assert.deepEqual(await getXattrs(join(root, 'ping')), {
      'security.capability': capability,
      'user.note': Buffer.from('hello'),
    });
    assert.deepEqual(await getXattrs(join(root, 'bad-cap')), {});
    assert.equal(await readFile(join(root, long), 'utf8'), 'long');
    const big = await lstat(join(root, 'big'));
    assert.deepEqual([big.uid, big.gid], [3100000, 3200001]);
    const mapped = await lstat(join(root, 'mapped'));
    assert.deepEqual([mapped.uid, mapped.gid], [100010, 200020]);

    await assert.rejects(
      apply(await freshDir('unmapped'), await makeLayer([{ name: 'f', uid: 10 }]), {
        uidMap: [{ containerId: 0, hostId: 1000, size: 5 }],
      }),
      isInvalidArgument,
    );
  });

  test('compression is taken from the media type or sniffed; the diff_id is always of the tar', async () => {
    const tarBytes = await makeLayer([{ name: 'hello', content: 'world' }]);
    const cases: [Buffer, string | undefined][] = [
      [tarBytes, undefined],
      [tarBytes, MediaType.ociLayer],
      [gzipSync(tarBytes), undefined],
      [gzipSync(tarBytes), MediaType.dockerLayerGzip],
      [zstdCompressSync(tarBytes), undefined],
      [zstdCompressSync(tarBytes), MediaType.ociLayerZstd],
    ];
    for (const [bytes, mt] of cases) {
      const root = await freshDir('comp');
      const r = await apply(root, bytes, mt ? { compression: mt } : {});
      assert.equal(r.diffId, digestOf(tarBytes));
      assert.equal(r.size, tarBytes.length);
      assert.equal(await readFile(join(root, 'hello'), 'utf8'), 'world');
    }
    await assert.rejects(
      apply(await freshDir('comp'), gzipSync(tarBytes), { compression: MediaType.ociLayerZstd }),
      isInvalidArgument,
    );
    await assert.rejects(
      apply(await freshDir('comp'), tarBytes, { compression: 'application/json' }),
      isInvalidArgument,
    );
  });

  test('the entry limit is enforced', async () => {
    const layer = await makeLayer([{ name: 'a' }, { name: 'b' }, { name: 'c' }]);
    await assert.rejects(apply(await freshDir('limit'), layer, { maxEntries: 2 }), (err) => {
      assert.ok(isInvalidArgument(err));
      assert.match(err.message, /more than 2 entries/);
      return true;
    });
    await apply(await freshDir('limit'), layer, { maxEntries: 3 });
  });

  test('aborting while the layer is still arriving stops the apply with Aborted', async () => {
    const tarBytes = await makeLayer([
      { name: 'a', content: 'a' },
      { name: 'big', content: Buffer.alloc(1 << 20, 1) },
    ]);
    const ac = new AbortController();
    async function* slow() {
      yield tarBytes.subarray(0, 4096);
      ac.abort();
      await new Promise((resolve) => setTimeout(resolve, 50));
      yield tarBytes.subarray(4096);
    }
    await assert.rejects(applyLayer(await freshDir('abort'), Readable.from(slow()), { signal: ac.signal }), {
      kind: 'Aborted',
    });
  });

  test("a failing source's error comes out unchanged", async () => {
    const tarBytes = await makeLayer([{ name: 'big', content: Buffer.alloc(1 << 20, 1) }]);
    async function* failing() {
      yield gzipSync(tarBytes).subarray(0, 2000);
      throw dataLoss('upstream digest mismatch');
    }
    await assert.rejects(applyLayer(await freshDir('fail'), Readable.from(failing())), isDataLoss);
    async function* failingPlain() {
      yield tarBytes.subarray(0, 4096);
      throw dataLoss('upstream digest mismatch');
    }
    await assert.rejects(applyLayer(await freshDir('fail'), Readable.from(failingPlain())), isDataLoss);
  });

  test('an aborted apply stops with Aborted', async () => {
    const ac = new AbortController();
    ac.abort();
    await assert.rejects(
      apply(await freshDir('abort'), await makeLayer([{ name: 'a' }]), { signal: ac.signal }),
      {
        kind: 'Aborted',
      },
    );
  });
});

/** Copy a tree with everything tar can carry (cp -a keeps hardlinks, owners, modes, times). */
async function copyTree(from: string, to: string): Promise<void> {
  await run('cp', ['-a', '--', `${from}/.`, to]);
}

async function setTimes(path: string, secs: number): Promise<void> {
  await run('touch', ['-h', '-d', `@${secs}`, '--', path]);
}

describe('diffDirectories / packDirectory', { skip: !asRoot && 'needs root (owners)' }, () => {
  async function makeLower(): Promise<string> {
    const lower = await freshDir('lower');
    await apply(
      lower,
      await makeLayer([
        { name: 'etc/', type: 'directory', mtime: T0 + 1 },
        { name: 'etc/passwd', content: 'root\n', mtime: T0 + 2 },
        { name: 'etc/shadow', content: 'secret\n', mode: 0o640, gid: 42, mtime: T0 + 3 },
        { name: 'etc/localtime', type: 'symlink', linkname: '/usr/share/zoneinfo/UTC', mtime: T0 + 4 },
        { name: 'bin/', type: 'directory', mtime: T0 + 5 },
        { name: 'bin/busybox', content: 'bb', mode: 0o755, mtime: T0 + 6 },
        { name: 'bin/sh', type: 'link', linkname: 'bin/busybox' },
        { name: 'gone/', type: 'directory', mtime: T0 + 7 },
        { name: 'gone/file', content: 'g', mtime: T0 + 8 },
        { name: 'becomes-dir', content: 'f', mtime: T0 + 9 },
        { name: 'becomes-file/', type: 'directory', mtime: T0 + 10 },
        { name: 'becomes-file/x', content: 'x', mtime: T0 + 10 },
        { name: 'same-size', content: 'aaaa', mtime: T0 + 11 },
        { name: 'keep/', type: 'directory', mtime: T0 + 12 },
        { name: 'keep/untouched', content: 'u', mtime: T0 + 12 },
        { name: 'keep/edited', content: 'e1', mtime: T0 + 12 },
        { name: 'fifo', type: 'fifo', mtime: T0 + 13 },
      ]),
    );
    return lower;
  }

  test('apply(diff(lower, upper)) onto a copy of lower equals upper', async () => {
    const lower = await makeLower();
    const upper = await freshDir('upper');
    await copyTree(lower, upper);
    // Changes of every kind.
    await writeFile(join(upper, 'etc/passwd'), 'root\nuser\n');
    await unlink(join(upper, 'etc/shadow'));
    await rm(join(upper, 'gone'), { recursive: true });
    await unlink(join(upper, 'becomes-dir'));
    await mkdir(join(upper, 'becomes-dir'));
    await writeFile(join(upper, 'becomes-dir/inner'), 'inner');
    await rm(join(upper, 'becomes-file'), { recursive: true });
    await writeFile(join(upper, 'becomes-file'), 'now a file');
    await chmod(join(upper, 'bin/busybox'), 0o4755);
    await link(join(upper, 'bin/busybox'), join(upper, 'bin/ls'));
    await unlink(join(upper, 'etc/localtime'));
    await symlink('/usr/share/zoneinfo/Europe/Paris', join(upper, 'etc/localtime'));
    await chown(join(upper, 'etc/passwd'), 1234, 5678);
    // Ids past what 6 octal digits hold (262143), one of them past 7 (2097151): PAX records carry them.
    await writeFile(join(upper, 'big-ids'), 'b');
    await chown(join(upper, 'big-ids'), 300_000, 3_000_000);
    // Same size, same whole-second mtime, different bytes: only a content comparison sees it.
    await writeFile(join(upper, 'same-size'), 'bbbb');
    await utimes(join(upper, 'same-size'), T0 + 11, T0 + 11);
    await writeFile(join(upper, 'keep/edited'), 'e2');
    await utimes(join(upper, 'keep'), T0 + 12, T0 + 12); // parent looks untouched; the diff still carries it
    await mkdir(join(upper, 'new/deep/er'), { recursive: true });
    await writeFile(join(upper, 'new/deep/er/file'), randomBytes(200_000));
    await writeFile(join(upper, `long-${'n'.repeat(200)}`), 'long name');
    await writeFile(join(upper, 'zero-mode'), 'z', { mode: 0 });
    await chmod(join(upper, 'zero-mode'), 0);
    await setTimes(join(upper, 'etc/localtime'), T0 + 50);

    const diffTar = await buffer(diffDirectories(lower, upper));
    const again = await buffer(diffDirectories(lower, upper));
    assert.ok(diffTar.equals(again), 'diff output is deterministic');

    const target = await freshDir('target');
    await copyTree(lower, target);
    const r = await apply(target, diffTar);
    assert.equal(r.diffId, digestOf(diffTar));
    assert.deepEqual(await snapshotTree(target), await snapshotTree(upper));

    // Unchanged files are not in the diff; whiteouts are.
    const names = await tarNames(diffTar);
    assert.ok(!names.includes('keep/untouched'));
    assert.ok(names.includes('keep/'), 'the parent of a change is included');
    assert.ok(names.includes('.wh.gone'));
    assert.ok(names.includes('etc/.wh.shadow'));
    assert.ok(!names.some((n) => n.startsWith('gone/')), 'no whiteouts below a deleted directory');
    assert.ok(names.includes('same-size'));
  });

  test('a hardlink added to an unchanged file re-links the old names to the new copy', async () => {
    const lower = await makeLower();
    const upper = await freshDir('upper');
    await copyTree(lower, upper);
    await link(join(upper, 'keep/untouched'), join(upper, 'keep/zz-new-link'));
    const diffTar = await buffer(diffDirectories(lower, upper));
    const target = await freshDir('target');
    await copyTree(lower, target);
    await apply(target, diffTar);
    assert.deepEqual(await snapshotTree(target), await snapshotTree(upper));
    const [a, b] = await Promise.all([
      lstat(join(target, 'keep/untouched')),
      lstat(join(target, 'keep/zz-new-link')),
    ]);
    assert.equal(a.ino, b.ino);
  });

  test('an identical pair diffs to an empty layer', async () => {
    const lower = await makeLower();
    const upper = await freshDir('upper');
    await copyTree(lower, upper);
    assert.deepEqual(await tarNames(await buffer(diffDirectories(lower, upper))), []);
  });

  test('packDirectory of a tree, applied to an empty root, reproduces it', async () => {
    const lower = await makeLower();
    const packed = await buffer(packDirectory(lower));
    const target = await freshDir('target');
    await apply(target, packed);
    assert.deepEqual(await snapshotTree(target), await snapshotTree(lower));
    assert.deepEqual(await snapshotTree(target), await snapshotTree(lower));
    assert.ok((await buffer(packDirectory(lower))).equals(packed), 'packing is deterministic');
  });

  test('a file capability set on an unchanged file is a change, carried and restored', async () => {
    // What `setcap cap_net_raw+ep` writes: a version-2 capability, bit 13 permitted and effective.
    const capability = '0100000200200000000000000000000000000000';
    const lower = await makeLower();
    const upper = await freshDir('cap-upper');
    await copyTree(lower, upper);
    // Only the attribute changes (and ctime): mode, owner, size and mtime stay.
    await run('setfattr', ['-n', 'security.capability', '-v', `0x${capability}`, join(upper, 'bin/busybox')]);
    const diffTar = await buffer(diffDirectories(lower, upper));
    // busybox is hard-linked (bin/sh): both names go in, the second as a link to the first.
    assert.deepEqual(await tarNames(diffTar), ['bin/', 'bin/busybox', 'bin/sh']);
    const target = await freshDir('cap-target');
    await copyTree(lower, target);
    await apply(target, diffTar);
    assert.equal(
      (await getXattrs(join(target, 'bin/busybox')))['security.capability']?.toString('hex'),
      capability,
    );
    assert.deepEqual(await snapshotTree(target), await snapshotTree(upper));
  });

  test('a missing upper fails the stream instead of producing a partial layer', async () => {
    await assert.rejects(buffer(packDirectory(join(work, 'does-not-exist'))));
  });
});

describe('applyLayer against a real engine', {
  skip: !asRoot && 'needs root (buildah chroot builds)',
}, () => {
  // buildah (containers/storage) writes the layers, whiteouts included, and unpacks them itself; our
  // rootfs from the same layers must match its rootfs.
  test('layers built by buildah apply to the same rootfs buildah mounts', async (t) => {
    const tools = await imageTools();
    const containers: string[] = [];
    let mounted: string | undefined;
    // One hook, in this order: buildah recreates its storage under tools.dir if it runs after the
    // cleanup (after-hooks run in the order they were added).
    t.after(async () => {
      if (mounted !== undefined) await tools.buildah(['umount', mounted]).catch(() => {});
      for (const c of containers) await tools.buildah(['rm', c]).catch(() => {});
      await tools.cleanup();
    });
    const rootfs = join(tools.dir, 'seed');
    await mkdir(join(rootfs, 'bin'), { recursive: true });
    await writeFile(join(rootfs, 'bin/busybox'), await readFile('/bin/busybox'), { mode: 0o755 });
    for (const applet of ['sh', 'ls', 'rm', 'mkdir', 'ln', 'chmod', 'chown', 'mkfifo', 'touch', 'cp']) {
      await symlink('busybox', join(rootfs, 'bin', applet));
    }
    const from = async (image: string) => {
      const c = (await tools.buildah(['from', '--quiet', image])).trim();
      containers.push(c);
      return c;
    };
    const sh = (c: string, script: string) => tools.buildah(['run', c, '/bin/sh', '-c', script]);
    const c1 = await from('scratch');
    await tools.buildah(['copy', '--quiet', c1, rootfs, '/']);
    await sh(
      c1,
      [
        'mkdir -p /data/sub /data/keep /etc /opq/old',
        'echo one > /data/sub/f',
        'echo keep > /data/keep/k',
        'ln /data/sub/f /data/h',
        'ln -s /etc/passwd /data/abs',
        'echo root:x:0:0 > /etc/passwd',
        'echo old > /opq/old/o',
        'echo gone > /data/gone',
        'chown 1000:1000 /data/keep/k',
      ].join(' && '),
    );
    await tools.buildah(['commit', '--quiet', '--format', 'oci', c1, 'localhost/strata-apply/l1']);
    const c2 = await from('localhost/strata-apply/l1');
    await sh(
      c2,
      [
        'rm /data/gone /bin/ls',
        'rm -rf /opq && mkdir -p /opq/new && echo new > /opq/new/n',
        'rm -rf /data/sub && echo now-a-file > /data/sub',
        'chmod 4755 /data/h',
        'mkfifo /data/fifo',
        'ln -s ../data /rel',
      ].join(' && '),
    );
    await tools.buildah(['commit', '--quiet', '--format', 'oci', c2, 'localhost/strata-apply/l2']);

    const layout = join(tools.dir, 'layout');
    await tools.buildah(['push', '--quiet', 'localhost/strata-apply/l2', `oci:${layout}`]);
    const blob = (d: string) => join(layout, 'blobs', 'sha256', d.slice('sha256:'.length));
    const index = JSON.parse(await readFile(join(layout, 'index.json'), 'utf8'));
    const manifest = JSON.parse(await readFile(blob(index.manifests[0].digest), 'utf8'));
    const config = JSON.parse(await readFile(blob(manifest.config.digest), 'utf8'));
    const ours = await freshDir('engine');
    const diffIds: string[] = [];
    for (const layer of manifest.layers as { digest: string; mediaType: string }[]) {
      const r = await applyLayer(ours, createReadStream(blob(layer.digest)), {
        compression: layer.mediaType,
      });
      diffIds.push(r.diffId);
    }
    assert.deepEqual(diffIds, config.rootfs.diff_ids);
    const top = manifest.layers[manifest.layers.length - 1] as { digest: string };
    const topNames = await tarNames(gunzipSync(await readFile(blob(top.digest))));
    assert.ok(
      topNames.some((n) => n.split('/').pop()!.startsWith('.wh.')),
      `whiteouts in ${topNames.join(' ')}`,
    );
    t.diagnostic(`top layer: ${topNames.join(' ')}`);

    const c3 = await from('localhost/strata-apply/l2');
    const theirs = (await tools.buildah(['mount', c3])).trim();
    mounted = c3;
    // Directory mtimes depend on when each side touched them; everything else must match exactly.
    const comparable = (tree: Record<string, Node>) =>
      Object.fromEntries(
        Object.entries(tree).map(([k, v]) => [k, v.type === 'dir' ? { ...v, mtime: 0 } : v]),
      );
    const mine = await snapshotTree(ours);
    assert.deepEqual(comparable(mine), comparable(await snapshotTree(theirs)));
    assert.equal(mine['data/sub']?.type, 'file');
    assert.equal(mine['data/abs']?.target, '/etc/passwd');
    assert.equal(mine['bin/ls'], undefined);
    assert.deepEqual(
      Object.keys(mine).filter((k) => k.startsWith('opq/')),
      ['opq/new', 'opq/new/n'],
    );
  });
});

async function tarNames(bytes: Buffer): Promise<string[]> {
  const tar = (await import('tar-stream')).default;
  const ex = tar.extract();
  const names: string[] = [];
  const done = (async () => {
    for await (const e of ex) {
      names.push(e.header.name);
      e.resume();
    }
  })();
  ex.end(bytes);
  await done;
  return names;
}

// ---------------------------------------------------------------------------------------------------
// Hostile layers. Each case applies into base/root beside a sentinel directory base/outside, and checks
// that nothing outside the root changed.

interface Sandbox {
  base: string;
  /** Where the tree shows: the directory applied into (native), the merged overlay (overlayfs). */
  root: string;
  outside: string;
  token: string;
  mode: Mode;
}

/** How layers are applied: into one directory, or as overlayfs uppers over the layers before them. */
type Mode = 'native' | 'overlayfs';

async function sandbox(mode: Mode): Promise<Sandbox> {
  const base = await freshDir('hostile');
  const root = join(base, 'root');
  const outside = join(base, 'outside');
  await mkdir(root);
  await mkdir(join(outside, 'dir'), { recursive: true });
  await writeFile(join(outside, 'keep'), 'keep');
  await writeFile(join(outside, 'dir/inner'), 'inner');
  await setTimes(join(outside, 'keep'), T0);
  return { base, root, outside, token: `pwn-${randomBytes(6).toString('hex')}`, mode };
}

/** Applies `layers` as `s.mode` says; for overlayfs the layers' uppers go in base/layers/<i>. */
async function applyAll(s: Sandbox, layers: (LayerEntry[] | Buffer)[]): Promise<unknown> {
  const uppers: string[] = [];
  const whiteoutDevice = join(s.base, 'layers', 'whiteout');
  if (s.mode === 'overlayfs') {
    await mkdir(join(s.base, 'layers'));
    await run('mknod', [whiteoutDevice, 'c', '0', '0']);
  }
  for (const l of layers) {
    const bytes = Buffer.isBuffer(l) ? l : await makeLayer(l);
    try {
      if (s.mode === 'native') {
        await apply(s.root, bytes);
        continue;
      }
      const upper = join(s.base, 'layers', String(uppers.length));
      await mkdir(upper);
      const lowers = [...uppers].reverse();
      uppers.push(upper);
      await apply(upper, bytes, {
        overlay: { lowers, whiteout: (p) => link(whiteoutDevice, fsPath(p)) },
      });
    } catch (err) {
      return err;
    }
  }
  return undefined;
}

/** Shows the overlayfs layers merged at s.root (read-only) while `fn` runs. */
async function withMerged(s: Sandbox, fn: () => Promise<void>): Promise<void> {
  if (s.mode === 'native') return fn();
  const empty = join(s.base, 'layers', 'empty');
  await mkdir(empty);
  const layers = (await readdir(join(s.base, 'layers')))
    .filter((n) => /^\d+$/.test(n))
    .sort((a, b) => Number(b) - Number(a))
    .map((n) => join(s.base, 'layers', n));
  await run('mount', ['-t', 'overlay', 'overlay', '-o', `lowerdir=${[...layers, empty].join(':')}`, s.root]);
  try {
    await fn();
  } finally {
    await run('umount', [s.root]);
  }
}

/** Everything outside the root that an escape could reach: the sandbox, and host files we name. */
async function outsideState(s: Sandbox): Promise<unknown> {
  const hostFile = async (p: string) => {
    const st = await lstat(p);
    return {
      ino: st.ino,
      mtimeMs: st.mtimeMs,
      ctimeMs: st.ctimeMs,
      nlink: st.nlink,
      sha: sha256hex(await readFile(p)),
    };
  };
  const exists = async (p: string) =>
    lstat(p).then(
      () => true,
      () => false,
    );
  const inside = (r: string) => /^(root|layers)(\/|$)/.test(r);
  return {
    sandbox: await snapshotTree(s.base, { skip: inside }),
    sandboxTimes: (await lstat(s.outside)).mtimeMs,
    // Extended attributes change no mtime: an escape that sets one shows only here.
    sandboxXattrs: await dumpTree(s.outside, undefined),
    passwd: await hostFile('/etc/passwd'),
    strays: await Promise.all(
      [dirname(s.base), work, '/', '/tmp', '/etc', tmpdir()].map((d) => exists(join(d, s.token))),
    ),
    abs: await exists('/abs'),
  };
}

/**
 * `layer` with every `placeholder` (in names and PAX records) replaced by `bytes` of the same length,
 * header checksums fixed: a name that is not UTF-8, which tar-stream cannot write.
 */
function withNameBytes(layer: Buffer, placeholder: string, bytes: Buffer): Buffer {
  const out = Buffer.from(layer);
  for (let i = out.indexOf(placeholder, 0, 'latin1'); i >= 0; i = out.indexOf(placeholder, i + 1, 'latin1')) {
    bytes.copy(out, i);
  }
  for (let at = 0; at + 512 <= out.length; at += 512) {
    if (out.toString('latin1', at + 257, at + 262) !== 'ustar') continue;
    out.fill(0x20, at + 148, at + 156);
    let sum = 0;
    for (let j = at; j < at + 512; j++) sum += out[j]!;
    out.write(`${sum.toString(8).padStart(6, '0')}\0 `, at + 148, 'latin1');
  }
  return out;
}

/** One case, run against both ways of applying: the same refusals, nothing outside the root touched. */
function hostile(
  name: string,
  layers: (s: Sandbox) => Promise<(LayerEntry[] | Buffer)[]>,
  expect: 'reject' | ((s: Sandbox) => Promise<void>),
): void {
  for (const mode of ['native', 'overlayfs'] as const) {
    test(`${name} (${mode})`, async () => {
      const s = await sandbox(mode);
      const before = await outsideState(s);
      const failure = await applyAll(s, await layers(s));
      if (expect === 'reject') {
        assert.ok(failure, 'the layer was expected to be refused');
        assert.ok(isInvalidArgument(failure), `expected InvalidArgument, got ${String(failure)}`);
      } else {
        assert.equal(failure, undefined, `unexpected failure: ${String(failure)}`);
        await withMerged(s, () => expect(s));
      }
      assert.deepEqual(await outsideState(s), before, 'something outside the root changed');
    });
  }
}

describe('applyLayer: hostile layers', {
  skip: !asRoot && 'needs root (the host files it guards are root-owned)',
}, () => {
  hostile(
    'names that are not UTF-8 keep their bytes through fifos, xattrs, whiteouts, opaque dirs, hardlinks',
    async () => {
      const layer = async (kind: string) => {
        const { stdout } = await run('python3', [TARTOOL, kind, '-'], {
          encoding: 'buffer',
          timeout: 60_000,
        });
        return stdout;
      };
      return [await layer('names'), await layer('more'), await layer('edit')];
    },
    async (s) => {
      const { stdout } = await run('python3', [TARTOOL, 'tree', s.root], { timeout: 60_000 });
      const tree = JSON.parse(stdout) as Record<string, { type: string; 'user.k'?: string; group?: string }>;
      const at = (name: string) => tree[Buffer.from(name, 'latin1').toString('hex')];
      assert.equal(at('names/caf\xe9'), undefined, 'whited out');
      assert.equal(at('names/sym-\xe9')?.type, 'symlink');
      assert.equal(at('names/fifo-\xe9')?.type, 'other');
      assert.equal(at('names/x-\xe9')?.['user.k'], '76');
      assert.equal(at('opq/old-\xe9'), undefined, 'hidden by the opaque directory');
      assert.equal(at('opq/new-\xe9')?.type, 'file');
      assert.equal(at('names/hl-\xe9')?.type, 'file');
      assert.equal(await readFile(join(s.root, 'names/hl-\u00e9'), 'utf8').catch(() => 'absent'), 'absent');
      // Nothing was left under a lossy (U+FFFD) or temporary name.
      assert.ok(
        !Object.keys(tree).some(
          (k) => k.includes('efbfbd') || k.includes(Buffer.from('.strata-').toString('hex')),
        ),
      );
    },
  );

  hostile(
    'an xattr name with newlines on a name that is not UTF-8 sets nothing outside the root',
    async (s) => {
      // The attribute name smuggles a second file into a getfattr-style dump; the entry's name is not
      // UTF-8, which is when the applier goes through such a dump.
      const name = `user.a\n\n# file: ${join(s.outside, 'keep')}\nuser.evil`;
      const layer = await makeLayer([{ name: 'x-@@', content: 'x', pax: { [`SCHILY.xattr.${name}`]: 'v' } }]);
      return [withNameBytes(layer, 'x-@@', Buffer.from([0x78, 0x2d, 0xff, 0xfe]))];
    },
    async (s) => {
      const names = await readdir(s.root, { encoding: 'buffer' });
      assert.deepEqual(
        names.map((n) => n.toString('hex')),
        ['782dfffe'],
      );
      // The attribute is set on the entry itself, under its whole name, as containerd's Lsetxattr sets it.
      const { stdout } = await run('python3', [
        '-c',
        'import os,sys; print(os.listxattr(os.path.join(os.fsencode(sys.argv[1]), bytes.fromhex("782dfffe")), follow_symlinks=False))',
        s.root,
      ]);
      assert.equal(stdout.trim(), `['user.a\\n\\n# file: ${join(s.outside, 'keep')}\\nuser.evil']`);
    },
  );

  hostile(
    "a hardlink to a lower layer's file copies it up inside the root, whatever names the layer took",
    async (s) => {
      const target = Buffer.from([0x74, 0x2d, 0xff, 0xfe]); // t-\xff\xfe: copied up under a plain name
      const lower = withNameBytes(await makeLayer([{ name: 't-@@', content: 'lower' }]), 't-@@', target);
      // Symlinks out of the root at the plain names the applier would pick for its temporary copies.
      const planted = Array.from({ length: 4 }, (_, i) => [
        { name: `.strata-new-${process.pid}-${i + 1}`, type: 'symlink' as const, linkname: s.outside },
        { name: `.strata-src-${process.pid}-${i + 1}`, type: 'symlink' as const, linkname: s.outside },
      ]).flat();
      const upper = withNameBytes(
        await makeLayer([...planted, { name: 'l', type: 'link', linkname: 't-@@' }]),
        't-@@',
        target,
      );
      return [lower, upper];
    },
    async (s) => {
      assert.equal(await readFile(join(s.root, 'l'), 'utf8'), 'lower');
    },
  );

  hostile(
    "an owner id that does not fit in 32 bits is refused as the layer's fault",
    async () => [[{ name: 'f', content: 'x', pax: { uid: '4294967296', gid: '0' } }]],
    'reject',
  );

  /** Applies `layer` with a setfattr first on PATH that counts its runs; resolves to the result and count. */
  async function applyCountingSetfattr(
    root: string,
    layer: Buffer,
  ): Promise<{ r: ApplyResult; setfattrs: number }> {
    const shim = await freshDir('setfattr-shim');
    const log = join(shim, 'calls');
    const real = (await run('sh', ['-c', 'command -v setfattr'])).stdout.trim();
    await writeFile(join(shim, 'setfattr'), `#!/bin/sh\necho >> '${log}'\nexec '${real}' "$@"\n`, {
      mode: 0o755,
    });
    const path = process.env.PATH;
    process.env.PATH = `${shim}:${path}`;
    try {
      const r = await apply(root, layer);
      const calls = await readFile(log, 'utf8').catch(() => '');
      return { r, setfattrs: calls.split('\n').length - 1 };
    } finally {
      process.env.PATH = path;
    }
  }

  test("an entry's many xattrs cost one setfattr process, not one each", async () => {
    // A 1 MiB PAX header holds tens of thousands of attributes; a process each took minutes per entry.
    const pax = Object.fromEntries(Array.from({ length: 300 }, (_, i) => [`SCHILY.xattr.user.a${i}`, 'v']));
    const layer = await makeLayer([{ name: 'f', content: 'x', pax }]);
    const root = await freshDir('many-xattrs');
    const { r, setfattrs } = await applyCountingSetfattr(root, layer);
    assert.equal(setfattrs, 1);
    // The file system may keep only some of them (ext4: what fits in a block); the rest are counted.
    const set = Object.keys(await getXattrs(join(root, 'f'))).length;
    assert.ok(set > 0);
    assert.equal(r.skipped.xattr, 300 - set);
  });

  test('a layer labelling every entry applies under the default budget with a few setfattr processes', async () => {
    // SELinux-labelled and ostree exports carry an attribute on every file: a process per entry spent
    // the layer's budget, and took ~20 ms each.
    const count = 4500;
    const entries: LayerEntry[] = [
      { name: 'd/', type: 'directory', pax: { 'SCHILY.xattr.user.label': 'dir' } },
    ];
    for (let i = 0; i < count; i++) {
      entries.push({ name: `d/f${i}`, content: `${i}`, pax: { 'SCHILY.xattr.user.label': `l${i}` } });
    }
    entries.push({ name: 'd/s', type: 'symlink', linkname: 'f0', pax: { 'SCHILY.xattr.trusted.x': '1' } });
    const root = await freshDir('labelled');
    const { r, setfattrs } = await applyCountingSetfattr(root, await makeLayer(entries));
    assert.equal(r.skipped.xattr, 1); // trusted.* only
    assert.ok(setfattrs >= 1 && setfattrs <= 20, `${setfattrs} setfattr processes`);
    const labels = new Map<string, string>();
    let file = '';
    for (const line of (await dumpTree(join(root, 'd'), undefined)).split('\n')) {
      if (line.startsWith('# file: ')) file = line.slice(`# file: ${join(root, 'd')}`.length);
      const m = /^user\.label=0x([0-9a-f]*)$/.exec(line);
      if (m) labels.set(file, Buffer.from(m[1]!, 'hex').toString());
    }
    assert.equal(labels.size, count + 1);
    assert.equal(labels.get(''), 'dir');
    for (let i = 0; i < count; i++) assert.equal(labels.get(`/f${i}`), `l${i}`, `f${i}`);
  });

  test('batched xattrs land as if set entry by entry: replaced entries, whiteouts, hardlinks', async () => {
    const x = (name: string, value: string) => ({ [`SCHILY.xattr.user.${name}`]: value });
    const root = await freshDir('xattr-order');
    const names = async (rel: string) => Object.keys(await getXattrs(join(root, rel))).sort();
    for (const dir of ['w', 'v']) {
      await mkdir(join(root, dir));
      await writeFile(join(root, dir, 'lower'), 'lower');
    }
    const layer = await makeLayer([
      // Replaced by a later entry: the new file has its own attributes only.
      { name: 'a', content: 'old', pax: x('old', '1') },
      { name: 'a', content: 'new', pax: x('new', '2') },
      // A directory (with no attributes of its own) holding waiting entries, replaced by a file.
      { name: 'd/', type: 'directory' },
      { name: 'd/inner', content: 'i', pax: x('inner', '1') },
      { name: 'd', content: 'file now', pax: x('file', '3') },
      // Whiteouts of directories holding waiting entries: what this layer wrote stays, lowers' go, and
      // a directory only the lowers listed goes whole.
      { name: 'w/', type: 'directory' },
      { name: 'w/mine', content: 'm', pax: x('mine', '4') },
      { name: '.wh.w' },
      { name: 'v/mine', content: 'm', pax: x('mine', '4') },
      { name: '.wh.v' },
      // A hardlink to a waiting entry shares its inode and so its attributes, and adds its own.
      { name: 'h', content: 'h', pax: x('h', '5') },
      { name: 'hl', type: 'link', linkname: 'h', pax: x('hl', '6') },
      { name: 'hl2', type: 'link', linkname: 'hl' },
      // Refused in the middle of a batch (user.* on a symlink; a path with `: ` in it, as setfattr's
      // error lines separate with): counted against the entry that carried it.
      { name: 'x: y', content: 'p', pax: x('p', '7') },
      { name: 'x', type: 'symlink', linkname: 'x: y', pax: x('s', '8') },
      { name: 'z', content: 'z', pax: x('z', '9') },
    ]);
    const seen: string[] = [];
    const r = await apply(root, layer, { onSkip: (kind, name) => seen.push(`${kind}:${name}`) });
    assert.deepEqual(seen, ['xattr:x']);
    assert.equal(r.skipped.xattr, 1);
    assert.deepEqual(await names('x: y'), ['user.p']);
    assert.deepEqual(await names('z'), ['user.z']);
    assert.equal(await readFile(join(root, 'a'), 'utf8'), 'new');
    assert.deepEqual(await names('a'), ['user.new']);
    assert.equal(await readFile(join(root, 'd'), 'utf8'), 'file now');
    assert.deepEqual(await names('d'), ['user.file']);
    assert.deepEqual(await readdir(join(root, 'w')), ['mine']);
    assert.deepEqual(await names('w/mine'), ['user.mine']);
    assert.equal(await lstat(join(root, 'v')).catch(() => undefined), undefined);
    for (const rel of ['h', 'hl', 'hl2']) assert.deepEqual(await names(rel), ['user.h', 'user.hl'], rel);
  });

  test('a file capability followed by a hardlink header is cleared by its chown, as when set at once', async () => {
    if (process.getuid?.() !== 0) return; // security.capability and chown need root
    const capability = Buffer.from('0100000200200000000000000000000000000000', 'hex'); // cap_net_bind_service
    const cap = { 'SCHILY.xattr.security.capability': capability.toString('latin1') };
    const root = await freshDir('cap-link');
    const layer = await makeLayer([
      { name: 'bin', content: 'x', mode: 0o755, pax: cap },
      { name: 'kept', content: 'y', mode: 0o755, pax: cap },
      { name: 'bin-link', type: 'link', linkname: 'bin', mode: 0o755 },
    ]);
    const r = await apply(root, layer);
    assert.equal(r.skipped.xattr, 0);
    // The link's owner is applied to the shared inode after the capability, and chown clears it.
    assert.equal((await getXattrs(join(root, 'bin')))['security.capability'], undefined);
    assert.deepEqual((await getXattrs(join(root, 'kept')))['security.capability'], capability);
  });

  test('a layer whose entries need more child processes than the budget is refused, naming it', async () => {
    // A fifo, a device, an entry with xattrs: one process each (a fork of the daemon, ~20 ms).
    const entries: LayerEntry[] = [
      { name: 'p1', type: 'fifo' },
      { name: 'null', type: 'character-device', devmajor: 1, devminor: 3 },
      { name: 'f', content: 'x', pax: { 'SCHILY.xattr.user.a': '1', 'SCHILY.xattr.user.b': '2' } },
      { name: 'p2', type: 'fifo' },
    ];
    const layer = await makeLayer(entries);
    const fits = await apply(await freshDir('procs-fit'), layer, { maxProcesses: 4, allowDevices: true });
    assert.equal(fits.entries, 4);
    const over = await apply(await freshDir('procs-over'), layer, {
      maxProcesses: 3,
      allowDevices: true,
    }).then(
      () => undefined,
      (err: unknown) => err,
    );
    assert.ok(isInvalidArgument(over), `expected InvalidArgument, got ${String(over)}`);
    assert.match(String((over as Error).message), /more than 3 child processes/);
    // Entries that start none are not counted.
    const plain = await makeLayer(Array.from({ length: 8 }, (_, i) => ({ name: `f${i}`, content: 'x' })));
    assert.equal((await apply(await freshDir('procs-none'), plain, { maxProcesses: 0 })).entries, 8);
  });

  for (const [label, budget, refused] of [
    ['within', 3, false],
    ['over', 2, true],
  ] as const) {
    test(`overlay opaque markers and copy-ups count against the process budget (${label})`, async () => {
      const s = await sandbox('overlayfs');
      const failure = await applyAll(s, [
        [
          { name: 'd/', type: 'directory' },
          { name: 'd/old', content: 'old' },
          { name: 'a', content: 'a' },
        ],
      ]);
      assert.equal(failure, undefined);
      const upper = join(s.base, 'layers', '1');
      await mkdir(upper);
      // An opaque marker (setfattr), a link to a lower file (cp up), a directory over a file (setfattr).
      const layer = await makeLayer([
        { name: 'd/', type: 'directory' },
        { name: 'd/.wh..wh..opq' },
        { name: 'l', type: 'link', linkname: 'a' },
        { name: 'a/', type: 'directory' },
      ]);
      const result = await apply(upper, layer, {
        maxProcesses: budget,
        overlay: { lowers: [join(s.base, 'layers', '0')], whiteout: async () => {} },
      }).then(
        () => undefined,
        (err: unknown) => err,
      );
      if (!refused) assert.equal(result, undefined, `unexpected failure: ${String(result)}`);
      else {
        assert.ok(isInvalidArgument(result), `expected InvalidArgument, got ${String(result)}`);
        assert.match(String((result as Error).message), /more than 2 child processes/);
      }
    });
  }

  test('an opaque marker after the subdirectories it covers marks its own directory only', async () => {
    // Below an opaque directory overlayfs reads the upper alone: a marker (a process) per subdirectory
    // was no use, and a late marker over a large tree spent the layer's process budget.
    const s = await sandbox('overlayfs');
    const failure = await applyAll(s, [
      [
        { name: 'd/', type: 'directory' },
        { name: 'd/sub/deep/o', content: 'o' },
        { name: 'd/sub/old', content: 'old' },
        { name: 'd/made/lo', content: 'lo' },
      ],
    ]);
    assert.equal(failure, undefined);
    const lower = join(s.base, 'layers', '0');
    const upper = join(s.base, 'layers', '1');
    await mkdir(upper);
    const layer = await makeLayer([
      { name: 'd/', type: 'directory' },
      { name: 'd/sub/', type: 'directory' },
      { name: 'd/sub/new', content: 'new' },
      { name: 'd/sub/deep/', type: 'directory' },
      { name: 'd/sub/deep/n', content: 'n' },
      { name: 'd/x/', type: 'directory' },
      // No entry for d/made/: made in the upper with the lower's mode.
      { name: 'd/made/f', content: 'f' },
      { name: 'd/.wh..wh..opq' },
    ]);
    await apply(upper, layer, {
      maxProcesses: 1,
      overlay: { lowers: [lower], whiteout: async () => {} },
    });
    const opaque = async (rel: string) => (await getXattrs(join(upper, rel)))['trusted.overlay.opaque'];
    assert.deepEqual(await opaque('d'), Buffer.from('y'));
    for (const rel of ['d/sub', 'd/sub/deep', 'd/x', 'd/made'])
      assert.equal(await opaque(rel), undefined, rel);
    await withMerged(s, async () => {
      assert.deepEqual((await readdir(join(s.root, 'd'))).sort(), ['made', 'sub', 'x']);
      assert.deepEqual((await readdir(join(s.root, 'd/sub'))).sort(), ['deep', 'new']);
      assert.deepEqual(await readdir(join(s.root, 'd/sub/deep')), ['n']);
      assert.deepEqual(await readdir(join(s.root, 'd/made')), ['f']);
    });
  });

  hostile(
    "trusted.* xattrs in a layer are not set, as containerd's unpack refuses them (overlayfs reads its own)",
    async (): Promise<LayerEntry[][]> => [
      [
        { name: 'd/', type: 'directory' },
        { name: 'd/f', content: 'f' },
        { name: 'e/', type: 'directory' },
      ],
      [
        { name: 'd/', type: 'directory', pax: { 'SCHILY.xattr.trusted.overlay.opaque': 'y' } },
        { name: 'e/', type: 'directory', pax: { 'SCHILY.xattr.trusted.overlay.redirect': '/d' } },
        { name: 'g', content: 'g', pax: { 'SCHILY.xattr.trusted.x': '1', 'SCHILY.xattr.user.x': '1' } },
      ],
    ],
    async (s) => {
      assert.equal(await readFile(join(s.root, 'd/f'), 'utf8'), 'f');
      assert.deepEqual(await readdir(join(s.root, 'e')), []);
      if (s.mode === 'native') {
        for (const p of ['d', 'e']) assert.deepEqual(await getXattrs(join(s.root, p)), {});
        assert.deepEqual(Object.keys(await getXattrs(join(s.root, 'g'))), ['user.x']);
      }
    },
  );

  hostile('../escape is refused', async (s) => [[{ name: `../${s.token}`, content: 'x' }]], 'reject');

  hostile(
    'an absolute name lands inside the root',
    async (s) => [[{ name: `/abs/${s.token}`, content: 'x' }]],
    async (s) => {
      assert.equal(await readFile(join(s.root, 'abs', s.token), 'utf8'), 'x');
    },
  );

  hostile('a/../../x is refused', async (s) => [[{ name: `a/../../${s.token}`, content: 'x' }]], 'reject');

  hostile(
    'a file through symlink evil -> / lands in the root, not on the host',
    async () => [
      [
        { name: 'evil', type: 'symlink', linkname: '/' },
        { name: 'evil/etc/passwd', content: 'pwned' },
      ],
    ],
    async (s) => {
      assert.equal(await readFile(join(s.root, 'etc/passwd'), 'utf8'), 'pwned');
      assert.equal(await readlink(join(s.root, 'evil')), '/');
    },
  );

  hostile(
    'a file through symlink evil -> ../../.. stays in the root',
    async (s) => [
      [
        { name: 'evil', type: 'symlink', linkname: '../../..' },
        { name: `evil/${s.token}`, content: 'x' },
      ],
    ],
    async (s) => {
      assert.equal(await readFile(join(s.root, s.token), 'utf8'), 'x');
    },
  );

  hostile(
    'two layers: x -> <outside dir>, then x/pwn lands inside the root',
    async (s) => [
      [{ name: 'x', type: 'symlink', linkname: s.outside }],
      [
        { name: 'x/pwn', content: 'x' },
        { name: 'x/keep', content: 'overwritten?' },
      ],
    ],
    async (s) => {
      // containerd's overlayfs unpack resolves names in the new layer alone: x becomes a directory.
      const at = s.mode === 'native' ? join(s.root, s.outside) : join(s.root, 'x');
      assert.equal(await readFile(join(at, 'pwn'), 'utf8'), 'x');
      assert.equal(await readFile(join(at, 'keep'), 'utf8'), 'overwritten?');
    },
  );

  hostile(
    'a file replacing a symlink to an outside file replaces the link, not the target',
    async (s) => [
      [{ name: 'f', type: 'symlink', linkname: join(s.outside, 'keep') }],
      [{ name: 'f', content: 'mine' }],
    ],
    async (s) => {
      assert.ok((await lstat(join(s.root, 'f'))).isFile());
    },
  );

  hostile(
    'a directory entry over a symlink to an outside dir replaces the link, not the dir',
    async (s) => [
      [{ name: 'd', type: 'symlink', linkname: s.outside }],
      [{ name: 'd/', type: 'directory', mode: 0o777, uid: 1234 }],
    ],
    async (s) => {
      const st = await lstat(join(s.root, 'd'));
      assert.ok(st.isDirectory());
      assert.equal(st.uid, 1234);
    },
  );

  hostile(
    'a hardlink to ../../outside is refused',
    async () => [[{ name: 'h', type: 'link', linkname: '../../outside/keep' }]],
    'reject',
  );

  hostile(
    'a hardlink to /etc/passwd with no such file in the root is refused',
    async () => [[{ name: 'h', type: 'link', linkname: '/etc/passwd' }]],
    'reject',
  );

  hostile(
    'a hardlink to /etc/passwd links the root copy, never the host file',
    async () => [
      [
        { name: 'etc/passwd', content: 'in root' },
        { name: 'h', type: 'link', linkname: '/etc/passwd' },
      ],
    ],
    async (s) => {
      const [h, p] = await Promise.all([lstat(join(s.root, 'h')), lstat(join(s.root, 'etc/passwd'))]);
      assert.equal(h.ino, p.ino);
      assert.notEqual(h.ino, (await lstat('/etc/passwd')).ino);
    },
  );

  hostile(
    'a hardlink through a symlinked parent to a host path is refused when the root lacks it',
    async () => [
      [
        { name: 'evil', type: 'symlink', linkname: '/etc' },
        { name: 'h', type: 'link', linkname: 'evil/passwd' },
      ],
    ],
    'reject',
  );

  hostile(
    'a hardlink to an outside file via a symlink to its directory is refused',
    async (s) => [
      [
        { name: 'o', type: 'symlink', linkname: s.outside },
        { name: 'h', type: 'link', linkname: 'o/keep' },
      ],
    ],
    'reject',
  );

  hostile('a whiteout ../.wh.x is refused', async () => [[{ name: '../.wh.outside' }]], 'reject');
  hostile('a whiteout .wh... (of "..") is refused', async () => [[{ name: 'dir/.wh...' }]], 'reject');

  hostile(
    'a whiteout through a symlink to the sandbox deletes nothing outside',
    async (s) => [
      [{ name: 'evil', type: 'symlink', linkname: s.base }],
      [{ name: 'evil/.wh.outside' }, { name: 'evil/outside/.wh..wh..opq' }],
    ],
    async () => {},
  );

  hostile(
    'an opaque marker in a symlinked dir empties only the in-root directory',
    async (s) => [
      [
        { name: `${s.outside.slice(1)}/own`, content: 'in root' },
        { name: 'evil', type: 'symlink', linkname: s.outside },
      ],
      [{ name: 'evil/.wh..wh..opq' }],
    ],
    async (s) => {
      if (s.mode === 'native') {
        assert.deepEqual(Object.keys(await snapshotTree(join(s.root, s.outside))), []);
      } else {
        // As containerd's overlayfs unpack: an opaque directory where the link was, the target kept.
        assert.deepEqual(Object.keys(await snapshotTree(join(s.root, 'evil'))), []);
        assert.deepEqual(Object.keys(await snapshotTree(join(s.root, s.outside))), ['own']);
      }
    },
  );

  hostile(
    'a symlink loop in the parent chain is refused',
    async () => [
      [
        { name: 'a', type: 'symlink', linkname: 'b' },
        { name: 'b', type: 'symlink', linkname: 'a' },
        { name: 'a/file', content: 'x' },
      ],
    ],
    'reject',
  );

  hostile(
    'a self-referencing symlink in the parent chain is refused',
    async () => [
      [
        { name: 'l', type: 'symlink', linkname: '/l' },
        { name: 'l/x', content: 'x' },
      ],
    ],
    'reject',
  );

  hostile(
    'a name longer than 4096 bytes is refused',
    async () => [[{ name: `${'a/'.repeat(2100)}f`, content: 'x' }]],
    'reject',
  );
  hostile(
    'a name component longer than 255 bytes is refused',
    async () => [[{ name: 'x'.repeat(300), content: 'x' }]],
    'reject',
  );
  hostile(
    'a long but legal name is written',
    async () => [[{ name: `${`${'p'.repeat(200)}/`.repeat(14)}leaf`, content: 'deep' }]],
    async (s) => {
      assert.equal(await readFile(join(s.root, `${`${'p'.repeat(200)}/`.repeat(14)}leaf`), 'utf8'), 'deep');
    },
  );
  hostile(
    'a symlink target longer than 4096 bytes is refused',
    async () => [[{ name: 's', type: 'symlink', linkname: 'x'.repeat(5000) }]],
    'reject',
  );
  hostile(
    'a name with a NUL byte is refused',
    async () => [[{ name: 'a', pax: { path: 'a\0b' } }]],
    'reject',
  );

  hostile(
    'a truncated tar (inside file data) is refused',
    async () => {
      const t = await makeLayer([{ name: 'big', content: 'z'.repeat(5000) }]);
      return [t.subarray(0, 512 + 1000)];
    },
    'reject',
  );
  hostile(
    'a truncated tar (inside a header) is refused',
    async () => {
      const t = await makeLayer([
        { name: 'a', content: 'a' },
        { name: 'b', content: 'b' },
      ]);
      return [t.subarray(0, 1024 + 300)];
    },
    'reject',
  );
  hostile(
    'a tar with a corrupted header checksum is refused',
    async () => {
      const t = Buffer.from(await makeLayer([{ name: 'a', content: 'a' }]));
      t[0] = 0x62; // name changes, checksum does not
      return [t];
    },
    'reject',
  );
  hostile(
    'a corrupt gzip stream is refused',
    async () => {
      const gz = Buffer.from(
        gzipSync(await makeLayer([{ name: 'a', content: randomBytes(4000).toString('hex') }])),
      );
      for (let i = 20; i < gz.length - 8; i += 7) gz[i] = (gz[i] ?? 0) ^ 0x5a;
      return [gz];
    },
    'reject',
  );
  hostile(
    'a truncated gzip stream is refused',
    async () => {
      const gz = gzipSync(await makeLayer([{ name: 'a', content: randomBytes(4000).toString('hex') }]));
      return [gz.subarray(0, gz.length - 100)];
    },
    'reject',
  );
  hostile(
    'a truncated zstd stream is refused',
    async () => {
      const z = zstdCompressSync(
        await makeLayer([{ name: 'a', content: randomBytes(4000).toString('hex') }]),
      );
      return [z.subarray(0, z.length - 100)];
    },
    'reject',
  );
  hostile(
    'a non-directory in the parent chain is refused',
    async () => [
      [
        { name: 'f', content: 'file' },
        { name: 'f/child', content: 'x' },
      ],
    ],
    'reject',
  );
  hostile(
    'a hardlink to a directory is refused',
    async () => [
      [
        { name: 'd/', type: 'directory' },
        { name: 'h', type: 'link', linkname: 'd' },
      ],
    ],
    'reject',
  );
});
