// What a layer holds beyond plain UTF-8 files, unpacked and diffed by the daemon beside a real containerd
// 1.6, both driven by the real ctr on overlayfs: names that are not valid UTF-8 (in the ustar name field
// and in PAX path/linkpath records), character and block devices, and a file capability (PAX
// SCHILY.xattr.security.capability). The layer is written, and trees and diffs are read, by Python's
// tarfile and os (test/fixtures/layer-fidelity/tartool.py), so names are compared as bytes.
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { promisify } from 'node:util';
import { MediaType } from '../../src/oci/media-types.ts';
import { startContainerd, type TestContainerd } from '../helpers/containerd.ts';
import { CTR, startDaemon, type TestDaemon } from '../helpers/daemon.ts';
import { type LayeredImage, pushTars } from '../helpers/layered-image.ts';
import { runCommand } from '../helpers/process.ts';
import { startRegistry, type TestRegistry } from '../helpers/registry.ts';
import { removeTempDir, tempDir } from '../helpers/tmp.ts';

const run = promisify(execFile);
const TOOL = new URL('../fixtures/layer-fidelity/tartool.py', import.meta.url).pathname;
const OV = ['--snapshotter', 'overlayfs'];
const asRoot = process.getuid?.() === 0;
const hex = (s: string | Buffer) => Buffer.from(s).toString('hex');
const CAPABILITY = '0100000200200000000000000000000000000000';

type Tree = Record<string, TreeNode>;

interface TreeNode {
  type: string;
  mode: number;
  uid: number;
  gid: number;
  sha256?: string;
  target?: string;
  dev?: [number, number];
  group?: string;
  capability?: string;
}

async function tool<T>(...args: string[]): Promise<T> {
  const { stdout } = await run('python3', [TOOL, ...args], { timeout: 60_000, maxBuffer: 64 << 20 });
  return JSON.parse(stdout) as T;
}

type Entries = Record<string, Record<string, unknown>>;

describe('layer fidelity beside containerd 1.6 (overlayfs, ctr)', {
  skip: !asRoot && 'needs root (devices, capabilities, overlay mounts)',
}, () => {
  let reg: TestRegistry;
  let names: LayeredImage;
  let special: LayeredImage;
  let daemon: TestDaemon;
  let containerd: TestContainerd;
  let work: string;

  before(async () => {
    work = await tempDir('layer-fidelity');
    const layer = async (kind: string) => {
      const tar = join(work, `${kind}.tar`);
      await run('python3', [TOOL, kind, tar], { timeout: 60_000 });
      return readFile(tar);
    };
    reg = await startRegistry();
    names = await pushTars(reg, 'test/names', [await layer('names')]);
    special = await pushTars(reg, 'test/special', [await layer('special')]);
    daemon = await startDaemon();
    containerd = await startContainerd();
  });

  after(async () => {
    await containerd?.stop();
    await daemon?.stop();
    await reg?.stop();
    if (work) await removeTempDir(work);
  });

  /** Pulls `image` into both (overlayfs) and gives both trees as `ctr images mount` shows them. */
  async function trees(image: LayeredImage): Promise<{ got: Tree; want: Tree }> {
    await daemon.ctrOk(['images', 'pull', '--plain-http', image.ref]);
    await containerd.ctr(['images', 'pull', '--plain-http', ...OV, image.ref]);
    const mine = await tempDir('fidelity-mine');
    const theirs = await tempDir('fidelity-theirs');
    try {
      await daemon.ctrOk(['images', 'mount', image.ref, mine]);
      try {
        await containerd.ctr(['images', 'mount', ...OV, image.ref, theirs]);
        try {
          return { got: await tool<Tree>('tree', mine), want: await tool<Tree>('tree', theirs) };
        } finally {
          await containerd.ctr(['images', 'unmount', '--rm', theirs]);
        }
      } finally {
        await daemon.ctrOk(['images', 'unmount', '--rm', mine]);
      }
    } finally {
      await removeTempDir(mine);
      await removeTempDir(theirs);
    }
  }

  function assertSameTree(got: Tree, want: Tree): void {
    assert.deepEqual(Object.keys(got).sort(), Object.keys(want).sort());
    for (const path of Object.keys(want)) {
      assert.deepEqual(got[path], want[path], Buffer.from(path, 'hex').toString('latin1'));
    }
  }

  /** `ctr snapshots diff` of the image's (one-layer) snapshot from each, as uncompressed tar entries by name. */
  async function diffs(image: LayeredImage): Promise<{ got: Entries; want: Entries }> {
    const top = image.chainIds.at(-1)!;
    const diff = async (address: string, out: string) => {
      const args = [
        '--address',
        address,
        'snapshots',
        ...OV,
        'diff',
        '--media-type',
        MediaType.ociLayer,
        top,
      ];
      // ctr writes the layer to stdout: straight to a file, so its bytes stay bytes.
      await runCommand('sh', ['-c', 'out="$1"; shift; exec "$@" > "$out"', 'sh', out, CTR, ...args], {
        timeoutMs: 120_000,
      });
      const entries = await tool<Array<Record<string, unknown>>>('headers', out);
      return Object.fromEntries(entries.map((e) => [e.name as string, e]));
    };
    return {
      want: await diff(containerd.address, join(work, 'theirs.tar')),
      got: await diff(daemon.address, join(work, 'mine.tar')),
    };
  }

  const latin1 = (s: string) => hex(Buffer.from(s, 'latin1'));

  test('names that are not UTF-8 unpack to the bytes containerd unpacks them to', async () => {
    const { got, want } = await trees(names);
    // Not vacuous: containerd has every case as the layer says.
    const pax = latin1('names/\xff\xfe-pax');
    assert.equal(want[latin1('names/caf\xe9')]?.type, 'file');
    assert.equal(want[pax]?.type, 'file');
    const hard = want[latin1('names/hard-\xfe')];
    assert.ok(hard?.group !== undefined && hard.group === want[pax]?.group, 'one inode, two names');
    assert.equal(want[latin1('names/sym-\xe9')]?.target, latin1('caf\xe9'));
    assert.deepEqual(want[latin1('names/null-\xe9')]?.dev, [1, 3]);
    assertSameTree(got, want);
  });

  test('devices and a file capability unpack as containerd unpacks them', async () => {
    const { got, want } = await trees(special);
    assert.deepEqual(want[hex('dev/null')], { type: 'char', mode: 0o666, uid: 0, gid: 0, dev: [1, 3] });
    assert.deepEqual(want[hex('dev/loop9')], { type: 'block', mode: 0o660, uid: 0, gid: 6, dev: [7, 9] });
    assert.equal(want[hex('bin/ping')]?.capability, CAPABILITY);
    assertSameTree(got, want);
  });

  test('a diff of those names writes the bytes containerd writes', async () => {
    const { got, want } = await diffs(names);
    assert.equal(want[latin1('names/caf\xe9')]?.type, '0');
    // The first name in byte order carries the data; the other links to it.
    assert.equal(want[latin1('names/\xff\xfe-pax')]?.linkname, latin1('names/hard-\xfe'));
    assert.equal(want[latin1('names/sym-\xe9')]?.linkname, latin1('caf\xe9'));
    assert.deepEqual(want[latin1('names/null-\xe9')]?.dev, [1, 3]);
    assert.deepEqual(got, want);
  });

  test('a diff carries device numbers and the file capability as containerd does', async () => {
    const { got, want } = await diffs(special);
    assert.deepEqual(want[hex('dev/null')]?.dev, [1, 3]);
    assert.deepEqual(want[hex('dev/loop9')]?.dev, [7, 9]);
    assert.equal(want[hex('bin/ping')]?.capability, CAPABILITY);
    assert.deepEqual(got, want);
  });
});
