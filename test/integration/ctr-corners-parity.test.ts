// Less travelled ctr commands side by side with a real containerd 1.6: what ctr prints (stdout, stderr,
// exit code) against each is compared. Each case is one where the two once differed.
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { runCtr } from '../helpers/daemon.ts';
import { type Side, type SideBySide, startSideBySide } from '../helpers/side-by-side.ts';

/** What one ctr run showed its user. */
interface Shown {
  code: number;
  stdout: string;
  stderr: string;
}

describe('less travelled ctr commands side by side with containerd 1.6', () => {
  let both: SideBySide;

  before(async () => {
    both = await startSideBySide('corners');
  });
  after(async () => {
    await both?.stop();
  });

  const ctr = async (side: Side, args: string[], ns?: string): Promise<Shown> => {
    const { code, stdout, stderr } = await runCtr(side.address, args, {
      ...(ns ? { namespace: ns } : {}),
      timeoutMs: 60_000,
    });
    return { code, stdout, stderr };
  };

  test('ctr namespaces ls shows only the labels a namespace was given', async () => {
    const [, , listed, got] = await both.sameOnBoth(async (side, ns) => [
      await ctr(side, ['namespaces', 'create', ns, 'team=x', 'env=dev']),
      await ctr(side, ['namespaces', 'label', ns, 'env=', 'tier=1']),
      // Only this run's line: the other namespaces differ in name from run to run.
      (await ctr(side, ['namespaces', 'ls'])).stdout.split('\n').find((l) => l.startsWith(`${ns} `)),
      await ctr(side, ['namespaces', 'ls', '-q']).then((r) => r.stdout.split('\n').includes(ns)),
    ]);
    assert.match(String(listed), /^corners-\d+\s+team=x,tier=1\s*$/);
    assert.equal(got, true);
  });

  test('ctr plugins ls: the native snapshotter exports nothing; a bad filter is refused as containerd words it', async () => {
    const [native, refused] = await both.sameOnBoth(async (side) => [
      await ctr(side, ['plugins', 'ls', '--detailed', 'type==io.containerd.snapshotter.v1,id==native']),
      await ctr(side, ['plugins', 'ls', 'id==']),
    ]);
    assert.equal((native as Shown).code, 0);
    assert.match((native as Shown).stdout, /^ID:\s+native$/m);
    assert.deepEqual(refused, {
      code: 1,
      stdout: '',
      stderr:
        'ctr: filters: parse error: [id==]: expected value or quoted: invalid argument: invalid argument\n',
    });
  });
});
