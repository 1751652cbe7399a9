// A daemon killed (SIGKILL) while it fills a new snapshot's directory, then started again on the same
// root: as with containerd, whose record and directory are written in one transaction, the interrupted
// snapshot does not exist, its half-made directory is gone, and the same key can be prepared again.
import assert from 'node:assert/strict';
import { mkdirSync, writeFileSync } from 'node:fs';
import { readdir, readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, test } from 'node:test';
import { parseTable, startDaemon } from '../helpers/daemon.ts';
import { waitFor, within } from '../helpers/process.ts';

describe('snapshots: a daemon killed mid-prepare', () => {
  test('native: the interrupted prepare leaves no record and no directory; the key prepares again', async (t) => {
    const d = await startDaemon({ t });
    const SN = ['snapshots', '--snapshotter', 'native'];
    const dir = join(d.root, 'snapshots', 'native', 'snapshots');
    await d.ctrOk([...SN, 'prepare', 'a']);
    const source = /mount -t bind (\S+)/.exec(await d.ctrOk([...SN, 'mounts', '/mnt', 'a']))![1]!;
    // Enough entries that copying them for the child takes a while.
    for (let i = 0; i < 200; i++) {
      mkdirSync(join(source, `d${i}`));
      for (let j = 0; j < 100; j++) writeFileSync(join(source, `d${i}`, `f${j}`), `${i}/${j}\n`);
    }
    await d.ctrOk([...SN, 'commit', 'base', 'a']);

    const preparing = d.ctr([...SN, 'prepare', 'child', 'base']);
    await waitFor(async () => (await readdir(dir)).some((n) => n.startsWith('new-')), 60_000, {
      intervalMs: 2,
      what: "the child's directory to be in the making",
    });
    await d.kill();
    const interrupted = await within(preparing, 30_000, 'the interrupted ctr');
    assert.notEqual(interrupted.code, 0);
    await d.restart();

    const listed = parseTable(await d.ctrOk([...SN, 'ls']));
    assert.deepEqual(
      listed.map((r) => r.KEY),
      ['base'],
    );
    assert.deepEqual(
      (await readdir(dir)).filter((n) => n.startsWith('new-') || n.startsWith('rm-')),
      [],
    );
    await d.ctrOk([...SN, 'prepare', 'child', 'base']);
    const childSource = /mount -t bind (\S+)/.exec(await d.ctrOk([...SN, 'mounts', '/mnt', 'child']))![1]!;
    assert.equal(await readFile(join(childSource, 'd199', 'f99'), 'utf8'), '199/99\n');
    assert.equal((await readdir(dir)).length, 2);
  });
});
