// Less travelled ctr commands side by side with a real containerd 1.6: what ctr prints (stdout, stderr,
// exit code) against each is compared. Each case is one where the two once differed.
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import { after, before, describe, test } from 'node:test';
import { Images } from '../../src/api/gen/containerd/services/images/v1/images_pb.ts';
import { Introspection } from '../../src/api/gen/containerd/services/introspection/v1/introspection_pb.ts';
import { callUnary, metadataWith } from '../../src/api/grpc/client.ts';
import { startContainerd } from '../helpers/containerd.ts';
import { CTR, ctrEvents, runCtr, startDaemon } from '../helpers/daemon.ts';
import { runProcess, waitFor } from '../helpers/process.ts';
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

  test('ctr events shows what ctr changes: topics, namespaces and payloads as containerd publishes them', async () => {
    const target = {
      mediaType: 'application/vnd.oci.image.manifest.v1+json',
      digest: `sha256:${createHash('sha256').update('events').digest('hex')}`,
      size: 6n,
    };
    const [shown] = await both.sameOnBoth(async (side, ns) => {
      const sub = `${ns}-sub`;
      const blobDigest = `sha256:${createHash('sha256').update('blob').digest('hex')}`;
      const events = ctrEvents(side.address, [`namespace==${ns}`, `namespace==${sub}`]);
      try {
        // Subscribed once an event shows: namespaces made until one does are left out below.
        let probes = 0;
        await waitFor(async () => {
          await ctr(side, ['namespaces', 'create', `${ns}-probe-${++probes}`], ns);
          return events.lines().length > 0;
        });
        const run = (args: string[]) => ctr(side, args, ns);
        await run(['namespaces', 'create', sub, 'a=b']);
        await run(['namespaces', 'label', sub, 'a=c']);
        // ctr sets one label per Update (a mask of that label): the event names the request's labels,
        // not what the namespace holds after it.
        await run(['namespaces', 'label', sub, 'd=e']);
        await run(['namespaces', 'label', sub, 'a=']);
        const blob = await runProcess('sh', [
          '-c',
          `printf blob | exec "$@" content ingest blob`,
          'sh',
          CTR,
          '--address',
          side.address,
          '-n',
          ns,
        ]);
        assert.equal(blob.code, 0, blob.stderr);
        // A root, so no collection a later delete starts can take it before `content rm` does.
        await run(['content', 'label', blobDigest, 'containerd.io/gc.root=test']);
        // The view has no root: it is removed before any delete could start a collection.
        await run(['snapshots', '--snapshotter', 'native', 'prepare', 'k1']);
        await run(['snapshots', '--snapshotter', 'native', 'commit', 'n1', 'k1']);
        await run(['snapshots', '--snapshotter', 'native', 'view', 'v1', 'n1']);
        await run(['snapshots', '--snapshotter', 'native', 'prepare', 'k2', 'missing']);
        await run(['snapshots', '--snapshotter', 'native', 'rm', 'v1']);
        await run(['snapshots', '--snapshotter', 'native', 'rm', 'n1']);
        const opts = { metadata: metadataWith({ 'containerd-namespace': ns }) };
        await callUnary(side.client, Images.method.create, { image: { name: 'img', target } }, opts);
        await run(['images', 'label', 'img', 'x=y']);
        await run(['images', 'tag', 'img', 'img2']);
        await run(['images', 'rm', 'img2', 'never-made']);
        await run(['content', 'rm', blobDigest]);
        await run(['content', 'rm', `sha256:${'0'.repeat(64)}`]);
        await run(['leases', 'create', '--id', 'l1']);
        await run(['namespaces', 'rm', sub]);
        await run(['namespaces', 'create', `${ns}-end`]);
        await waitFor(() => events.lines().some((l) => l.includes(`${ns}-end`)));
      } finally {
        await events.stop();
      }
      const at = /^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d(\.\d+)? \+0000 UTC /;
      return [
        events
          .lines()
          .filter((l) => !l.includes(`${ns}-probe-`))
          .map((l) => (at.test(l) ? `T ${l.replace(at, '')}` : l).replaceAll(ns, 'NS')),
      ];
    });
    assert.deepEqual(shown, [
      'T NS /namespaces/create {"name":"NS-sub","labels":{"a":"b"}}',
      'T NS /namespaces/update {"name":"NS-sub","labels":{"a":"c"}}',
      'T NS /namespaces/update {"name":"NS-sub","labels":{"d":"e"}}',
      'T NS /namespaces/update {"name":"NS-sub","labels":{"a":""}}',
      'T NS /snapshot/prepare {"key":"k1"}',
      'T NS /snapshot/commit {"key":"k1","name":"n1"}',
      'T NS /snapshot/remove {"key":"v1"}',
      'T NS /snapshot/remove {"key":"n1"}',
      'T NS /images/create {"name":"img"}',
      'T NS /images/update {"name":"img","labels":{"x":"y"}}',
      'T NS /images/create {"name":"img2","labels":{"x":"y"}}',
      'T NS /images/delete {"name":"img2"}',
      `T NS /content/delete {"digest":"sha256:${createHash('sha256').update('blob').digest('hex')}"}`,
      'T NS-sub /namespaces/delete {"name":"NS-sub"}',
      'T NS /namespaces/create {"name":"NS-end"}',
    ]);
  });

  test('ctr events with a filter it cannot parse: containerd’s subscription error', async () => {
    const [shown] = await both.sameOnBoth(async (side) => {
      const events = ctrEvents(side.address, ['topic==']);
      await waitFor(() => events.lines().length > 0);
      await events.stop();
      return [events.lines()];
    });
    assert.deepEqual(shown, [
      'ctr: rpc error: code = Unknown desc = subscription error: failed parsing subscription filters: filters: parse error: [topic==]: expected value or quoted: invalid argument',
    ]);
  });

  test('ctr events against a daemon that stops: the stream ends as containerd’s does', async (t) => {
    // Servers of its own, stopped here; ctr events on each must see the stop, not wait for it.
    const containerd = await startContainerd({ t });
    const daemon = await startDaemon({ t });
    // SIGTERM to the daemon itself (the helper's stop would SIGKILL it after 5 s, when the server gives up
    // waiting for open calls), then its log says how the stop went.
    const stopStrata = async () => {
      const { pid } = await callUnary(daemon.client(), Introspection.method.server, {});
      process.kill(Number(pid), 'SIGTERM');
      await waitFor(
        async () => (await readFile(daemon.logFile, 'utf8')).includes('"daemon stopped"'),
        30_000,
      );
    };
    const seen: string[][] = [];
    for (const side of [
      { address: containerd.address, stop: () => containerd.stop() },
      { address: daemon.address, stop: () => stopStrata() },
    ]) {
      const events = ctrEvents(side.address, []);
      // Subscribed once a namespace it makes shows up.
      let n = 0;
      await waitFor(async () => {
        await runCtr(side.address, ['namespaces', 'create', `probe-${++n}`]);
        return events.lines().length > 0;
      });
      await side.stop();
      await waitFor(() => events.lines().some((l) => l.startsWith('ctr: ')));
      await events.stop();
      seen.push(events.lines().filter((l) => !l.includes('/namespaces/create')));
    }
    assert.deepEqual(seen[1], seen[0]);
    assert.deepEqual(seen[0], ['ctr: rpc error: code = Unavailable desc = transport is closing']);
    // The stream ended with the stop, not when the server gave up waiting for it and cut it.
    assert.doesNotMatch(await readFile(daemon.logFile, 'utf8'), /still running at shutdown/);
  });
});
