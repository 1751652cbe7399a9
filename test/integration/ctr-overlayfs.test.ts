// Acceptance of the overlayfs snapshotter with the real client, beside a real containerd 1.6 using its own
// overlayfs: `ctr images pull` without --snapshotter unpacks into it, `ctr images mount` shows the same
// tree containerd's overlay mount shows (paths, types, modes, owners, sizes, contents, link targets,
// hardlink groups, xattrs), `ctr snapshots ls` lists the same chain, `strata rootfs` exports it from
// either snapshotter, `ctr images rm --sync` leaves no directory, disk use is the layers' size, a chain
// of 125 layers mounts, and a root that cannot do overlay stops the daemon with a clear message.
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { mkdir, readdir, readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { promisify } from 'node:util';
import { gunzipSync } from 'node:zlib';
import { extract } from 'tar-stream';
import type { Descriptor } from '../../src/oci/descriptor.ts';
import { type Digest, encodedOf } from '../../src/oci/digest.ts';
import { MediaType } from '../../src/oci/media-types.ts';
import { diskUsage } from '../../src/snapshots/disk-usage.ts';
import { type Node, snapshotTree } from '../fixtures/hostile-layers/build.ts';
import { startContainerd, type TestContainerd } from '../helpers/containerd.ts';
import { parseTable, startDaemon, type TestDaemon } from '../helpers/daemon.ts';
import { pushMultiLayer } from '../helpers/images.ts';
import { type LayeredImage, pushLayeredImage, pushLayers } from '../helpers/layered-image.ts';
import { runProcess } from '../helpers/process.ts';
import { startRegistry, type TestRegistry } from '../helpers/registry.ts';
import { removeTempDir, tempDir } from '../helpers/tmp.ts';

const run = promisify(execFile);
const BIN = new URL('../../bin/strata', import.meta.url).pathname;
const OV = ['--snapshotter', 'overlayfs'];

type Tree = Record<string, Omit<Node, 'mtime'> & { mtime?: number; xattrs?: string }>;

/** The tree without directory times (parents made for a layer cannot keep them all) but with xattrs. */
async function rootfs(dir: string): Promise<Tree> {
  const tree = await snapshotTree(dir);
  const out: Tree = {};
  const groups = new Map<string, number>();
  for (const node of Object.values(tree)) {
    if (node.linkGroup) groups.set(node.linkGroup, (groups.get(node.linkGroup) ?? 0) + 1);
  }
  for (const [path, node] of Object.entries(tree)) {
    out[path] = node.type === 'dir' ? { ...node, mtime: undefined } : { ...node };
    // A merged view counts links a whiteout hides; a group with one visible name is no group.
    if (node.linkGroup && groups.get(node.linkGroup) === 1) delete out[path]!.linkGroup;
  }
  // getfattr names files relative to where it runs: run it from the tree's root.
  const { stdout } = await run('getfattr', ['-R', '-h', '-d', '-m', '-', '-e', 'hex', '.'], { cwd: dir });
  for (const block of stdout.split('\n\n')) {
    const [head, ...attrs] = block.trim().split('\n');
    const m = /^# file: (?:\.\/)?(.*)$/.exec(head ?? '');
    if (!m || attrs.length === 0) continue;
    const node = out[m[1]!];
    if (node) node.xattrs = attrs.sort().join(',');
  }
  return out;
}

function assertSameTree(got: Tree, want: Tree): void {
  assert.deepEqual(Object.keys(got), Object.keys(want));
  for (const path of Object.keys(want)) assert.deepEqual(got[path], want[path], path);
}

/** A tar's entries without their times: name, type, permissions, owner, size, link target. */
function tarHeaders(tar: Buffer): Promise<string[]> {
  return new Promise((resolve, reject) => {
    const out: string[] = [];
    const ex = extract();
    ex.on('entry', (h, stream, next) => {
      const mode = ((h.mode ?? 0) & 0o7777).toString(8);
      out.push(`${h.name} ${h.type} ${mode} ${h.uid}:${h.gid} ${h.size} ${h.linkname ?? ''}`.trim());
      stream.on('end', next);
      stream.resume();
    });
    ex.on('finish', () => resolve(out));
    ex.on('error', reject);
    ex.end(tar);
  });
}

function strata(args: string[], timeoutMs = 180_000) {
  return runProcess(BIN, args, { timeoutMs });
}

describe('overlayfs snapshotter with ctr, beside containerd 1.6 with overlayfs', () => {
  let reg: TestRegistry;
  let image: LayeredImage;
  let daemon: TestDaemon;
  let containerd: TestContainerd;
  let work: string;
  let theirs: Tree;

  before(async () => {
    reg = await startRegistry();
    // Without a hardlink to a lower layer's file: containerd's overlayfs unpack fails on those.
    image = await pushLayeredImage(reg, 'test/layered', 'latest', { crossLayerHardlink: false });
    daemon = await startDaemon();
    containerd = await startContainerd();
    work = await tempDir('ctr-overlayfs');
  });

  after(async () => {
    await containerd?.stop();
    await daemon?.stop();
    await reg?.stop();
    if (work) await removeTempDir(work);
  });

  test('ctr plugins ls lists the overlayfs snapshotter; pull without --snapshotter unpacks into it', async () => {
    const plugins = await daemon.ctrOk(['plugins', 'ls']);
    assert.match(plugins, /^io\.containerd\.snapshotter\.v1\s+overlayfs\s+linux\/amd64\s+ok\s*$/m);
    assert.match(plugins, /^io\.containerd\.snapshotter\.v1\s+native\s+linux\/amd64\s+ok\s*$/m);

    const out = await daemon.ctrOk(['images', 'pull', '--plain-http', image.ref]);
    assert.match(out, /unpacking linux\/amd64 sha256:[0-9a-f]{64}\.\.\.\ndone/);
    // overlayfs is ctr's own fallback: no namespace names it, as with containerd.
    assert.doesNotMatch(await daemon.ctrOk(['namespaces', 'ls']), /containerd\.io\/defaults\/snapshotter/);
    const labels = await daemon.ctrOk(['content', 'ls']);
    assert.ok(labels.includes(`containerd.io/gc.ref.snapshot.overlayfs=${image.chainIds.at(-1)}`), labels);
    // Nothing went to native.
    assert.deepEqual(parseTable(await daemon.ctrOk(['snapshots', '--snapshotter', 'native', 'ls'])), []);
  });

  test('ctr snapshots ls lists the chain containerd lists; each snapshot holds only its own layer', async () => {
    await containerd.ctr(['images', 'pull', '--plain-http', ...OV, image.ref]);
    const byKey = (a: Record<string, string>, b: Record<string, string>) => (a.KEY! < b.KEY! ? -1 : 1);
    const ours = parseTable(await daemon.ctrOk(['snapshots', 'ls'])).sort(byKey);
    const want = parseTable(await containerd.ctr(['snapshots', ...OV, 'ls'])).sort(byKey);
    assert.equal(ours.length, image.chainIds.length);
    assert.deepEqual(ours, want);
    // Usage as containerd measures it: a layer's whiteouts are one inode each (containerd makes a device
    // per whiteout; ours are links to one).
    const usage = ['snapshots', ...OV, 'usage', '-b'];
    const ourUsage = parseTable(await daemon.ctrOk(usage)).sort(byKey);
    assert.deepEqual(ourUsage, parseTable(await containerd.ctr(usage)).sort(byKey));
    const dirs = await readdir(join(daemon.root, 'snapshots', 'overlayfs', 'snapshots'));
    assert.equal(dirs.length, image.chainIds.length);
    // No copies: the top snapshot's own directory lacks the base layer's busybox.
    const top = JSON.parse(await daemon.ctrOk(['snapshots', 'info', image.chainIds.at(-1)!])) as {
      Kind: string;
    };
    assert.equal(top.Kind, 'Committed');
    let withBusybox = 0;
    for (const d of dirs) {
      const has = await readdir(
        join(daemon.root, 'snapshots', 'overlayfs', 'snapshots', d, 'fs', 'bin'),
      ).then(
        (names) => names.includes('busybox'),
        () => false,
      );
      if (has) withBusybox++;
    }
    assert.equal(withBusybox, 1);
  });

  test("ctr images mount shows the tree containerd's overlayfs mount shows", async () => {
    const mine = join(work, 'mine');
    const ref = join(work, 'theirs');
    await mkdir(mine);
    await mkdir(ref);
    await daemon.ctrOk(['images', 'mount', image.ref, mine]);
    try {
      await containerd.ctr(['images', 'mount', ...OV, image.ref, ref]);
      try {
        theirs = await rootfs(ref);
        const got = await rootfs(mine);
        // Not vacuous: the image's interesting cases are really there.
        assert.equal(theirs['data/gone.txt'], undefined);
        assert.equal(theirs['data/gone-dir'], undefined);
        assert.equal(theirs['opq/old1'], undefined);
        assert.equal(theirs['opq/new1']?.type, 'file');
        assert.equal(theirs['replace-me']?.type, 'file');
        assert.equal(theirs['file-to-dir/child']?.type, 'file');
        assert.equal(theirs['data/hl-1'], undefined);
        assert.equal(theirs['data/hl-src']?.type, 'file');
        assert.equal(theirs['data/abs-link']?.target, '/data/a.txt');
        assert.match(theirs['data/attrs']?.xattrs ?? '', /^user\.strata=0x6b657074$/);
        assertSameTree(got, theirs);
      } finally {
        await containerd.ctr(['images', 'unmount', '--rm', ref]);
      }
    } finally {
      await daemon.ctrOk(['images', 'unmount', '--rm', mine]);
    }
    assert.deepEqual(
      parseTable(await daemon.ctrOk(['snapshots', 'ls'])).filter((r) => r.KIND !== 'Committed'),
      [],
    );
  });

  test('strata rootfs exports the same tree from overlayfs and from native', async () => {
    assert.ok(theirs, 'needs the mount comparison before it');
    const flags = ['--address', daemon.address];
    const fromOverlay = join(work, 'rootfs-overlayfs');
    const r = await strata(['rootfs', ...flags, image.ref, fromOverlay]);
    assert.equal(r.code, 0, r.stderr);
    assertSameTree(await rootfs(fromOverlay), theirs);

    await daemon.ctrOk(['images', 'pull', '--plain-http', '--snapshotter', 'native', image.ref]);
    const fromNative = join(work, 'rootfs-native');
    const n = await strata(['rootfs', ...flags, '--snapshotter', 'native', image.ref, fromNative]);
    assert.equal(n.code, 0, n.stderr);
    const native = await rootfs(fromNative);
    // containerd's overlayfs unpack turns a write through a lower layer's directory symlink into a
    // directory at the link (data/dirlink); native writes through it, into /opq. Otherwise equal.
    assert.equal(native['opq/through.txt']?.type, 'file');
    assert.equal(theirs['data/dirlink/through.txt']?.type, 'file');
    const differs = (p: string) => p.startsWith('data/dirlink') || p === 'opq/through.txt';
    const strip = (t: Tree) => Object.fromEntries(Object.entries(t).filter(([p]) => !differs(p)));
    assertSameTree(strip(native), strip(theirs));
  });

  test('ctr images rm --sync leaves no snapshot and no snapshot directory', async () => {
    await daemon.ctrOk(['images', 'rm', '--sync', image.ref]);
    assert.deepEqual(parseTable(await daemon.ctrOk(['snapshots', 'ls'])), []);
    assert.deepEqual(await readdir(join(daemon.root, 'snapshots', 'overlayfs', 'snapshots')), []);
    assert.deepEqual(await readdir(join(daemon.root, 'snapshots', 'native', 'snapshots')), []);
  });

  test("a 10-layer image takes its layers' size on disk, not a copy per layer", async () => {
    const ten = await pushMultiLayer(reg, 'test/ten', { layers: 9, layerBytes: 4 << 20 });
    await daemon.ctrOk(['images', 'pull', '--plain-http', ten.ref]);
    const blob = (d: Digest) => readFile(join(daemon.root, 'content', 'blobs', 'sha256', encodedOf(d)));
    const manifest = JSON.parse((await blob(ten.digest)).toString()) as { layers: Descriptor[] };
    assert.equal(manifest.layers.length, 10);
    let uncompressed = 0;
    for (const l of manifest.layers) {
      assert.equal(l.mediaType, MediaType.ociLayerGzip);
      uncompressed += gunzipSync(await blob(l.digest as Digest)).length;
    }
    const used = (await diskUsage(join(daemon.root, 'snapshots', 'overlayfs'))).size;
    assert.ok(used < uncompressed * 1.1, `${used} bytes on disk for ${uncompressed} bytes of layers`);
    assert.ok(used > uncompressed * 0.9, `${used} bytes on disk for ${uncompressed} bytes of layers`);
    await daemon.ctrOk(['images', 'rm', '--sync', ten.ref]);
  });

  test('a chain of 125 layers mounts (ctr images mount, strata rootfs) with every layer in it', async () => {
    const count = 125;
    const layers = Array.from({ length: count }, (_, i) => [
      { name: 'layers/', type: 'directory' as const },
      { name: `layers/l${i}`, content: `layer ${i}\n` },
      { name: 'top', content: `written by layer ${i}\n` },
    ]);
    const long = await pushLayers(reg, 'test/long', layers);
    await daemon.ctrOk(['images', 'pull', '--plain-http', long.ref], { timeoutMs: 300_000 });
    const target = join(work, 'long');
    await mkdir(target);
    await daemon.ctrOk(['images', 'mount', long.ref, target]);
    try {
      assert.equal((await readdir(join(target, 'layers'))).length, count);
      assert.equal(await readFile(join(target, 'top'), 'utf8'), `written by layer ${count - 1}\n`);
    } finally {
      await daemon.ctrOk(['images', 'unmount', '--rm', target]);
    }
    const exported = join(work, 'long-rootfs');
    const r = await strata(['rootfs', '--address', daemon.address, long.ref, exported]);
    assert.equal(r.code, 0, r.stderr);
    assert.equal((await readdir(join(exported, 'layers'))).length, count);
  });

  test("ctr snapshots diff of an overlay child lists the entries containerd's lists", async () => {
    // Deletions (a file, a symlink, a directory inside an unchanged one), a directory replaced (an
    // opaque directory in the upper), additions, a mode change and a grown hardlinked file.
    const fill =
      'mkdir -p d opq keep/sub && echo x > d/x && echo y > d/y && echo g > gone && ' +
      'echo o > opq/old && mkdir opq/oldsub && echo s > opq/oldsub/s && echo k > keep/sub/k && ' +
      'ln -s gone lnk && echo h > hl && ln hl hl2';
    const change =
      'rm gone lnk d/x && rm -r opq keep/sub && mkdir opq && echo n > opq/new && ' +
      'echo z > d/z && echo more >> hl && mkdir newdir && touch newdir/e && chmod 700 d';
    type Ctr = (args: string[]) => Promise<string>;
    const diffOf = async (side: string, ctr: Ctr, address: string) => {
      const sn = ['snapshots', ...OV];
      const mnt = join(work, `diff-${side}`);
      await mkdir(mnt);
      const inMount = async (key: string, script: string) => {
        const command = (await ctr([...sn, 'mounts', mnt, key])).trim();
        await run('sh', ['-c', `${command} && (cd "$0" && ${script}); s=$?; umount "$0"; exit $s`, mnt]);
      };
      await ctr([...sn, 'prepare', 'diff-a']);
      await inMount('diff-a', fill);
      await ctr([...sn, 'commit', 'diff-base', 'diff-a']);
      await ctr([...sn, 'prepare', 'diff-b', 'diff-base']);
      await inMount('diff-b', change);
      await ctr([...sn, 'commit', 'diff-child', 'diff-b']);
      const file = join(work, `diff-${side}.tar`);
      const media = 'application/vnd.oci.image.layer.v1.tar';
      await run('sh', [
        '-c',
        `ctr --address "$0" ${sn.join(' ')} diff --media-type ${media} diff-child > "$1"`,
        address,
        file,
      ]);
      for (const key of ['diff-child', 'diff-base']) await ctr([...sn, 'rm', key]);
      return tarHeaders(await readFile(file));
    };
    const ours = await diffOf('strata', (a) => daemon.ctrOk(a), daemon.address);
    const theirs = await diffOf('containerd', (a) => containerd.ctr(a), containerd.address);
    // containerd writes the parents of every entry, a whiteout's too.
    assert.ok(
      theirs.some((e) => e.startsWith('keep/ directory')),
      theirs.join('\n'),
    );
    assert.deepEqual(ours, theirs);
  });
});

describe('a root that cannot do overlay', () => {
  test('stops the daemon with a message naming --snapshotter native, which then starts', async () => {
    // overlayfs refuses another overlay as upper directory: a root on an overlay mount cannot do overlay.
    const base = await tempDir('no-overlay');
    const root = join(base, 'root');
    try {
      for (const d of ['lower', 'upper', 'work', 'root']) await mkdir(join(base, d));
      const dirs = ['lower', 'upper', 'work'].map((d) => join(base, d));
      await run('mount', [
        '-t',
        'overlay',
        'overlay',
        '-o',
        `lowerdir=${dirs[0]},upperdir=${dirs[1]},workdir=${dirs[2]}`,
        root,
      ]);
      try {
        const address = join(base, 's.sock');
        const r = await strata(['daemon', '--root', root, '--address', address], 60_000);
        assert.notEqual(r.code, 0);
        assert.match(
          r.stdout + r.stderr,
          /overlayfs snapshotter cannot mount overlay on .*--snapshotter native/s,
        );
        const native = await startDaemon({ root, args: ['--snapshotter', 'native'] });
        try {
          const plugins = await native.ctrOk(['plugins', 'ls']);
          assert.doesNotMatch(plugins, /snapshotter\.v1\s+overlayfs/);
          assert.match(plugins, /snapshotter\.v1\s+native/);
          // ctr would fall back to overlayfs: namespaces name native as their default.
          await native.ctrOk(['namespaces', 'create', 'made']);
          assert.match(
            await native.ctrOk(['namespaces', 'ls']),
            /^made\s+containerd\.io\/defaults\/snapshotter=native\s*$/m,
          );
        } finally {
          await native.stop();
        }
      } finally {
        await run('umount', ['-l', root]);
      }
    } finally {
      await removeTempDir(base);
    }
  });
});
