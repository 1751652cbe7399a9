// Which manifest `strata pull` takes from an index, side by side with `ctr images pull` on a real
// containerd 1.6: indexes nested in indexes, indexes and manifests listed with or without a platform, and
// images with nothing for the platform. Both pull the same image from one real docker-registry; what each
// unpacked (every image has one layer of its own, so a snapshot names the image) and the error each
// printed must be the same.
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import type { Platform } from '../../src/oci/descriptor.ts';
import { startContainerd, type TestContainerd } from '../helpers/containerd.ts';
import { startDaemon, type TestDaemon } from '../helpers/daemon.ts';
import { pushTree, type TreeIndex } from '../helpers/nested-index.ts';
import { type ProcessResult, runProcess } from '../helpers/process.ts';
import { startRegistry, type TestRegistry } from '../helpers/registry.ts';

const BIN = new URL('../../bin/strata', import.meta.url).pathname;
const amd64: Platform = { os: 'linux', architecture: 'amd64' };
const arm64: Platform = { os: 'linux', architecture: 'arm64' };
const armV7: Platform = { os: 'linux', architecture: 'arm', variant: 'v7' };

/** Image names are unique across the cases, so each case's snapshots are its own. */
const CASES: Array<{ name: string; tree: TreeIndex; unpacks: string[] }> = [
  {
    name: 'the platform only inside a nested index',
    tree: {
      index: [
        { image: 'a-arm', platform: arm64 },
        {
          index: [
            { image: 'a-nested-amd', platform: amd64 },
            { image: 'a-nested-arm', platform: arm64 },
          ],
        },
      ],
    },
    unpacks: ['a-nested-amd'],
  },
  {
    name: 'two nested indexes without a platform, the platform in the first only',
    tree: {
      index: [
        { index: [{ image: 'h-first-amd', platform: amd64 }] },
        { index: [{ image: 'h-second-arm', platform: arm64 }] },
      ],
    },
    unpacks: ['h-first-amd'],
  },
  {
    name: 'a matching manifest beside a nested index: the manifest alone',
    tree: {
      index: [{ index: [{ image: 'b-nested-amd', platform: amd64 }] }, { image: 'b-amd', platform: amd64 }],
    },
    unpacks: ['b-amd'],
  },
  {
    name: 'a nested index listed for another platform is not followed',
    tree: {
      index: [
        { index: [{ image: 'c-listed-arm', platform: amd64 }], platform: arm64 },
        { image: 'c-amd', platform: amd64 },
      ],
    },
    unpacks: ['c-amd'],
  },
  {
    name: 'a manifest listed without a platform, its config the platform',
    tree: { index: [{ image: 'd-unlisted-amd', platform: amd64, listed: null }] },
    unpacks: ['d-unlisted-amd'],
  },
  {
    name: 'a manifest listed without a platform, its config another',
    tree: { index: [{ image: 'e-unlisted-arm', platform: arm64, listed: null }] },
    unpacks: [],
  },
  {
    name: 'the platform absent from every level',
    tree: {
      index: [{ image: 'f-arm', platform: arm64 }, { index: [{ image: 'f-nested-v7', platform: armV7 }] }],
    },
    unpacks: [],
  },
  {
    name: 'two nested indexes without a platform: only the first is followed',
    tree: {
      index: [
        { index: [{ image: 'g-first-arm', platform: arm64 }] },
        { index: [{ image: 'g-second-amd', platform: amd64 }] },
      ],
    },
    unpacks: [],
  },
];

/** The error line a command printed after its own `name: ` prefix, or '' when it succeeded. */
function failure(r: ProcessResult, prefix: string): string {
  if (r.code === 0) return '';
  const line = r.stderr.split('\n').find((l) => l.startsWith(prefix));
  assert.ok(line, `no "${prefix}" line in:\n${r.stderr}`);
  return line.slice(prefix.length);
}

describe('strata pull chooses the manifest of an index as ctr images pull does', () => {
  let reg: TestRegistry;
  let containerd: TestContainerd;
  let daemon: TestDaemon;

  before(async () => {
    reg = await startRegistry();
    containerd = await startContainerd();
    daemon = await startDaemon();
  });
  after(async () => {
    await daemon?.stop();
    await containerd?.stop();
    await reg?.stop();
  });

  /** The images whose layers are unpacked on the native snapshotter at `address`, by name. */
  async function unpacked(address: string, names: Map<string, string>): Promise<string[]> {
    const r = await runProcess('ctr', ['--address', address, 'snapshots', '--snapshotter', 'native', 'ls']);
    assert.equal(r.code, 0, r.stderr);
    const keys = r.stdout
      .split('\n')
      .slice(1)
      .map((l) => l.split(/\s+/)[0]!);
    return keys.flatMap((k) => names.get(k) ?? []).sort();
  }

  for (const [i, c] of CASES.entries()) {
    test(c.name, async () => {
      const tree = await pushTree(reg, `nested/case${i}`, 'latest', c.tree);
      const names = new Map([...tree.diffIds].map(([name, diffId]) => [diffId, name]));
      const platform = ['--platform', 'linux/amd64', '--snapshotter', 'native'];
      const ctr = await runProcess(
        'ctr',
        ['--address', containerd.address, 'images', 'pull', '--plain-http', ...platform, tree.ref],
        { timeoutMs: 120_000 },
      );
      const strata = await runProcess(
        BIN,
        ['pull', '--plain-http', '--progress', 'none', '--address', daemon.address, ...platform, tree.ref],
        { timeoutMs: 120_000 },
      );
      assert.deepEqual(await unpacked(containerd.address, names), c.unpacks, 'what ctr unpacked');
      assert.deepEqual(await unpacked(daemon.address, names), c.unpacks, 'what strata unpacked');
      const expected =
        c.unpacks.length === 0 ? `no match for platform in manifest ${tree.root.digest}: not found` : '';
      assert.equal(failure(ctr, 'ctr: '), expected);
      assert.equal(failure(strata, 'strata pull: '), expected);
    });
  }
});
