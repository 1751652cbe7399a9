// Acceptance: Debian's ctr 1.6 pulls (client-side fetch and unpack) into `strata daemon` with the native
// snapshotter, and the rootfs Strata prepares is the one a real containerd 1.6 prepares for the same image:
// same paths, types, modes, owners, sizes, contents, link targets and hardlink groups.
import assert from 'node:assert/strict';
import { readdir } from 'node:fs/promises';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { type Node, snapshotTree } from '../fixtures/hostile-layers/build.ts';
import { startContainerd, type TestContainerd } from '../helpers/containerd.ts';
import { parseTable, startDaemon, type TestDaemon } from '../helpers/daemon.ts';
import { type LayeredImage, pushLayeredImage } from '../helpers/layered-image.ts';
import { startRegistry, type TestRegistry } from '../helpers/registry.ts';

const SN = ['--snapshotter', 'native'];

/** The source directory of the bind mount `ctr snapshots view|mounts` prints. */
function mountSource(out: string, access: 'ro' | 'rw' = 'ro'): string {
  const m = /^mount -t bind (\S+) \S+ -o (\S+)$/m.exec(out);
  assert.ok(m, `unexpected mount output: ${out}`);
  assert.deepEqual(m[2]!.split(',').sort(), ['rbind', access]);
  return m[1]!;
}

/** The tree without directory times: copying a parent (containerd's and ours) cannot keep them all. */
async function rootfs(dir: string): Promise<Record<string, Omit<Node, 'mtime'> & { mtime?: number }>> {
  const tree = await snapshotTree(dir);
  const out: Record<string, Omit<Node, 'mtime'> & { mtime?: number }> = {};
  for (const [path, node] of Object.entries(tree)) {
    out[path] = node.type === 'dir' ? { ...node, mtime: undefined } : node;
  }
  return out;
}

describe('ctr images pull into strata daemon', () => {
  let reg: TestRegistry;
  let image: LayeredImage;
  let strata: TestDaemon;
  let containerd: TestContainerd;
  const top = () => image.chainIds.at(-1)!;

  before(async () => {
    reg = await startRegistry();
    image = await pushLayeredImage(reg, 'test/layered');
    strata = await startDaemon();
    containerd = await startContainerd();
  });

  after(async () => {
    await containerd?.stop();
    await strata?.stop();
    await reg?.stop();
  });

  test('pull completes; check reports it complete and unpacked; snapshots ls shows the chain', async () => {
    const out = await strata.ctrOk(['images', 'pull', '--plain-http', ...SN, image.ref]);
    assert.match(out, /unpacking linux\/amd64 sha256:[0-9a-f]{64}\.\.\.\ndone/);

    const check = parseTable(await strata.ctrOk(['images', 'check', ...SN]));
    assert.deepEqual(
      check.map((r) => [r.REF, r.STATUS, r.UNPACKED]),
      [[image.ref, 'complete (5/5)', 'true']],
    );
    assert.deepEqual((await strata.ctrOk(['images', 'check', '-q', ...SN])).trim(), image.ref);
    // Without --snapshotter ctr asks Namespaces.Get for the default (else it would look in overlayfs).
    assert.deepEqual((await strata.ctrOk(['images', 'check', '-q'])).trim(), image.ref);

    const snapshots = parseTable(await strata.ctrOk(['snapshots', ...SN, 'ls']));
    const expected = image.chainIds.map((id, i) => ({
      KEY: id,
      PARENT: i === 0 ? '' : image.chainIds[i - 1]!,
      KIND: 'Committed',
    }));
    const byKey = (a: { KEY?: string }, b: { KEY?: string }) => (a.KEY! < b.KEY! ? -1 : 1);
    assert.deepEqual(snapshots.sort(byKey), expected.sort(byKey));

    // The unpack labelled what GC follows: the config holds the top snapshot, layers their diff_ids.
    const labels = await strata.ctrOk(['content', 'ls']);
    assert.ok(labels.includes(`containerd.io/gc.ref.snapshot.native=${top()}`), labels);
    for (const d of image.diffIds) assert.ok(labels.includes(`containerd.io/uncompressed=${d}`), d);
  });

  test('a second pull applies nothing: the committed snapshots stay as they were', async () => {
    const info = async () => JSON.parse(await strata.ctrOk(['snapshots', ...SN, 'info', top()])) as unknown;
    const before = await info();
    await strata.ctrOk(['images', 'pull', '--plain-http', ...SN, image.ref]);
    assert.deepEqual(await info(), before);
    assert.equal(parseTable(await strata.ctrOk(['snapshots', ...SN, 'ls'])).length, image.chainIds.length);
  });

  test('the rootfs equals the one containerd 1.6 prepares with its native snapshotter', async () => {
    await containerd.ctr(['images', 'pull', '--plain-http', ...SN, image.ref]);
    const theirs = mountSource(
      await containerd.ctr(['snapshots', ...SN, 'view', '--target', '/mnt', 'compare', top()]),
    );
    // `ctr snapshots view` labels nothing, so any collection may take the view (a pending one, from the
    // pull's lease going, did under load); `prepare` labels containerd.io/gc.root and holds the same tree.
    const ours = mountSource(
      await strata.ctrOk(['snapshots', ...SN, 'prepare', '--target', '/mnt', 'compare', top()]),
      'rw',
    );
    assert.ok(ours.startsWith(join(strata.root, 'snapshots', 'native', 'snapshots')), ours);

    const want = await rootfs(theirs);
    const got = await rootfs(ours);
    // Not vacuous: the image's interesting cases are really there.
    assert.equal(want['data/gone.txt'], undefined);
    assert.equal(want['data/gone-dir'], undefined);
    assert.equal(want['opq/old1'], undefined);
    assert.equal(want['opq/through.txt']?.type, 'file');
    assert.equal(want['replace-me']?.type, 'file');
    assert.equal(want['file-to-dir/child']?.type, 'file');
    assert.equal(want['data/hl-1'], undefined);
    assert.equal(want['data/hl-2']?.linkGroup, 'data/hl-2');
    assert.equal(want['data/hl-src']?.linkGroup, 'data/hl-2');
    assert.equal(want['data/suid']?.mode, 0o4755);
    assert.equal(want['data/fifo']?.type, 'fifo');
    assert.equal(want['data/abs-link']?.target, '/data/a.txt');
    assert.deepEqual(Object.keys(got), Object.keys(want));
    for (const path of Object.keys(want)) assert.deepEqual(got[path], want[path], path);

    await strata.ctrOk(['snapshots', ...SN, 'rm', 'compare']);
  });

  test('images rm --sync removes the image, its snapshots and their directories', async () => {
    await strata.ctrOk(['images', 'rm', '--sync', image.ref]);
    assert.deepEqual(parseTable(await strata.ctrOk(['snapshots', ...SN, 'ls'])), []);
    assert.deepEqual(await readdir(join(strata.root, 'snapshots', 'native', 'snapshots')), []);
    assert.deepEqual(parseTable(await strata.ctrOk(['images', 'check', ...SN])), []);
  });
});
