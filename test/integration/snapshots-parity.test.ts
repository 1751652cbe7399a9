// The Snapshots and Diff services side by side with a real containerd 1.6: the same raw gRPC calls or ctr
// commands against each, and the codes and messages a client gets, what is left behind and the layers
// written compared.
import assert from 'node:assert/strict';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { Leases } from '../../src/api/gen/containerd/services/leases/v1/leases_pb.ts';
import { Namespaces } from '../../src/api/gen/containerd/services/namespaces/v1/namespace_pb.ts';
import { Snapshots } from '../../src/api/gen/containerd/services/snapshots/v1/snapshots_pb.ts';
import { callServerStream, callUnary, metadataWith } from '../../src/api/grpc/client.ts';
import { CTR } from '../helpers/daemon.ts';
import { runCommand, runProcess } from '../helpers/process.ts';
import { answer, type Side, type SideBySide, startSideBySide } from '../helpers/side-by-side.ts';
import { removeTempDir, tempDir } from '../helpers/tmp.ts';

const asRoot = process.getuid?.() === 0;
const LAYER = 'application/vnd.oci.image.layer.v1.tar';

/**
 * A tree with what a tar header makes hard: files of named users and of ids past the header's fields,
 * names long enough to split or too long to, names and link targets not ASCII or not UTF-8, hardlinks,
 * a fifo, devices, a file capability, set-id and sticky bits, and a sub-second mtime. Every time is
 * fixed, so both sides see the same tree. `$1` is the root; `$2` is `parent` or `child` (changes only:
 * containerd dates a deletion's whiteout to the moment of the diff).
 */
const TREE = `
set -e
cd "$1"
t=@1700000000
if [ "$2" = parent ]; then
  mkdir -p etc home/user "long-$(printf 'd%.0s' $(seq 60))" "$(printf 'n%.0s' $(seq 90))-dir"
  echo root > etc/owned-by-root
  echo daemon > etc/owned-by-daemon; chown 1:1 etc/owned-by-daemon
  echo nobody > home/user/nobody; chown 65534:65534 home/user/nobody
  echo unnamed > home/user/unnamed; chown 4242:4242 home/user/unnamed
  chown 1:65534 home/user
  echo split > "long-$(printf 'd%.0s' $(seq 60))/$(printf 'f%.0s' $(seq 60))"
  echo pax > "$(printf 'b%.0s' $(seq 110))"
  echo in-long-dir > "$(printf 'n%.0s' $(seq 90))-dir/$(printf 'x%.0s' $(seq 70))"
  echo latin1 > "$(printf 'caf\\351')"
  echo utf8 > "$(printf 'na\\303\\257ve')"
  ln -s "$(printf 't%.0s' $(seq 120))" long-target
  ln -s "$(printf 'caf\\351')" latin1-target
  echo linked > hard-1; ln hard-1 hard-2
  mkfifo fifo
  mknod null c 1 3; mknod loop9 b 7 9; chown 0:6 loop9; chmod 660 loop9
  echo cap > ping; setfattr -n security.capability -v 0x0100000200200000000000000000000000000000 ping
  echo mid > mid-ids; chown 300000:300000 mid-ids
  echo big > big-ids; chown 3000000:3000001 big-ids
  echo suid > suid; chmod 4755 suid
  mkdir shared; chmod 3775 shared
  echo nanos > nanos; touch -d @1700000000.75 nanos
  echo old > before-1970; touch -d @-86400.25 before-1970
else
  echo changed > etc/owned-by-daemon
  mkdir -p home/user/new; echo new > home/user/new/file; chown 4242:0 home/user/new/file
  echo more > "$(printf 'caf\\351')"
  ln -f hard-1 hard-3
fi
find . -mindepth 1 ! -name nanos ! -name before-1970 -exec touch -h -d "$t" {} +
`;

/** Call options naming namespace `ns`, and lease `lease` when given. */
function callOptions(ns: string, lease?: string) {
  return {
    metadata: metadataWith({ 'containerd-namespace': ns, ...(lease ? { 'containerd-lease': lease } : {}) }),
  };
}

describe('snapshots side by side with containerd 1.6', () => {
  let both: SideBySide;

  before(async () => {
    both = await startSideBySide('snapshots');
  });
  after(async () => {
    await both?.stop();
  });

  for (const snapshotter of ['native', 'overlayfs']) {
    test(`${snapshotter}: an empty key or name is refused as containerd's database refuses it`, async () => {
      // containerd checks the target, the parent and the lease first and makes the namespace, then its
      // database refuses the empty key: Unknown, nothing stored. Stat, Remove and Mounts find nothing.
      const shown = await both.sameOnBoth(async (side, ns) => {
        const md = (lease?: string) => callOptions(ns, lease);
        const call = <T>(p: Promise<T>) => answer(p);
        const sn = snapshotter;
        const out = [
          await call(callUnary(side.client, Snapshots.method.prepare, { snapshotter: sn, key: '' }, md())),
          await call(callUnary(side.client, Snapshots.method.view, { snapshotter: sn, key: '' }, md())),
          await call(
            callUnary(
              side.client,
              Snapshots.method.prepare,
              { snapshotter: sn, key: '', parent: 'nope' },
              md(),
            ),
          ),
          await call(
            callUnary(side.client, Snapshots.method.prepare, { snapshotter: sn, key: '' }, md('none')),
          ),
        ];
        await callUnary(side.client, Leases.method.create, { id: 'held' }, md());
        out.push(
          await call(
            callUnary(side.client, Snapshots.method.prepare, { snapshotter: sn, key: '' }, md('held')),
          ),
          (await callUnary(side.client, Leases.method.listResources, { id: 'held' }, md())).resources.length,
        );
        // Held, or a collection another test's removal set off would take it on either side.
        await callUnary(side.client, Snapshots.method.prepare, { snapshotter: sn, key: 'work' }, md('held'));
        out.push(
          await call(
            callUnary(side.client, Snapshots.method.commit, { snapshotter: sn, key: 'work', name: '' }, md()),
          ),
          await call(
            callUnary(side.client, Snapshots.method.commit, { snapshotter: sn, key: 'nope', name: '' }, md()),
          ),
          await call(callUnary(side.client, Snapshots.method.stat, { snapshotter: sn, key: '' }, md())),
          await call(callUnary(side.client, Snapshots.method.remove, { snapshotter: sn, key: '' }, md())),
          await call(callUnary(side.client, Snapshots.method.mounts, { snapshotter: sn, key: '' }, md())),
        );
        const keys = [];
        for await (const r of callServerStream(
          side.client,
          Snapshots.method.list,
          { snapshotter: sn },
          md(),
        )) {
          keys.push(...r.info.map((i) => i.name));
        }
        return out.concat([keys]);
      });
      const unknown = { code: 'UNKNOWN', details: 'bucket name required' };
      const missing = { code: 'NOT_FOUND', details: 'snapshot  does not exist: not found' };
      assert.deepEqual(shown, [
        unknown,
        unknown,
        { code: 'NOT_FOUND', details: 'parent snapshot nope does not exist: not found' },
        { code: 'NOT_FOUND', details: 'lease does not exist: not found' },
        { code: 'UNKNOWN', details: 'key required' },
        0,
        unknown,
        unknown,
        missing,
        missing,
        missing,
        ['work'],
      ]);
    });
  }

  test('a diff holds the bytes containerd’s holds: its tar headers are laid out as Go writes them', {
    skip: !asRoot && 'needs root (owners, devices, a capability)',
  }, async () => {
    // containerd 1.6 leaves uname and gname empty (it looks no names up), as Strata does: files of named
    // users are no different. The rest of each header (octal fields, checksum, where a long name is split,
    // when and how a PAX header is written) decides whether the layer has containerd's digest.
    const work = await tempDir('snapshots-parity-diff');
    try {
      const layers = async (side: Side, ns: string) => {
        const sn = ['--address', side.address, '-n', ns, 'snapshots', '--snapshotter', 'native'];
        // Snapshots made under a lease, so no collection takes them meanwhile (ctr's prepare has none).
        const md = (lease?: string) => callOptions(ns, lease);
        await callUnary(side.client, Leases.method.create, { id: 'layers' }, md());
        const prepare = (key: string, parent = '') =>
          callUnary(
            side.client,
            Snapshots.method.prepare,
            { snapshotter: 'native', key, parent },
            md('layers'),
          );
        const fill = async (key: string, part: string) => {
          const line = await runCommand(CTR, [...sn, 'mounts', '/unused', key]);
          await runCommand('sh', ['-c', TREE, 'sh', line.split(' ')[3]!, part]);
        };
        const diff = async (key: string) => {
          const out = join(work, `${side.name}-${key}.tar`);
          await runCommand('sh', [
            '-c',
            'o=$1; shift; exec "$@" > "$o"',
            'sh',
            out,
            CTR,
            ...sn,
            'diff',
            '--media-type',
            LAYER,
            key,
          ]);
          return readFile(out);
        };
        await prepare('build-1');
        await fill('build-1', 'parent');
        await callUnary(
          side.client,
          Snapshots.method.commit,
          { snapshotter: 'native', key: 'build-1', name: 'step-1' },
          md('layers'),
        );
        await prepare('build-2', 'step-1');
        await fill('build-2', 'child');
        return [await diff('step-1'), await diff('build-2')];
      };
      const [[theirBase, theirChild], [ourBase, ourChild]] = [
        await layers(both.sides[0], 'diff'),
        await layers(both.sides[1], 'diff'),
      ];
      // Not vacuous: containerd's layers have the PAX headers and split names the tree calls for.
      assert.ok(theirBase!.includes('PaxHeaders.0/'), 'a PAX header');
      assert.ok(theirBase!.includes(Buffer.from('SCHILY.xattr.security.capability=')), 'the capability');
      assert.ok(theirBase!.includes(Buffer.from('uid=3000000\n')), 'an id past the field');
      assert.ok(theirBase!.includes(Buffer.from('mtime=-86401\n')), 'a time before 1970');
      assert.ok(theirChild!.includes(Buffer.from('home/user/new/file\0')), 'the child’s new file');
      const firstDifference = (a: Buffer, b: Buffer) => {
        for (let i = 0; i < Math.max(a.length, b.length); i++) if (a[i] !== b[i]) return i;
        return -1;
      };
      assert.equal(firstDifference(ourBase!, theirBase!), -1, 'the first layer, byte for byte');
      assert.equal(firstDifference(ourChild!, theirChild!), -1, 'the second layer, byte for byte');
    } finally {
      await removeTempDir(work);
    }
  });

  test('a Prepare refused for its empty key leaves its namespace made, as in containerd', async () => {
    const shown = await both.sameOnBoth(async (side, ns) => {
      const md = { metadata: metadataWith({ 'containerd-namespace': ns }) };
      await answer(callUnary(side.client, Snapshots.method.prepare, { snapshotter: 'native', key: '' }, md));
      const names = (await callUnary(side.client, Namespaces.method.list, {}, md)).namespaces.map(
        (n) => n.name,
      );
      return [names.includes(ns)];
    });
    assert.deepEqual(shown, [true]);
  });

  for (const snapshotter of ['native', 'overlayfs']) {
    test(`${snapshotter}: a prepare or view refused for its key or lease spends a number as containerd's`, async () => {
      // Each refusal in a namespace of its own, then a snapshot made and committed there: a commit of it
      // is refused naming its backend key, whose number says how many the refusal took.
      const cases: Array<{ key?: string; view?: boolean; parent?: string; lease?: string }> = [
        {},
        { view: true },
        { parent: 'nope' },
        { lease: 'none' },
        { lease: 'held' },
        // Not the key's fault: a lease that does not exist refuses a named snapshot after it is numbered.
        { key: 'x', lease: 'none' },
      ];
      const shown = await both.sameOnBoth(async (side, base) => {
        const out = [];
        for (const [i, c] of cases.entries()) {
          const ns = `${base}-${i}`;
          const md = (lease?: string) => callOptions(ns, lease);
          const sn = snapshotter;
          await callUnary(side.client, Leases.method.create, { id: 'held' }, md());
          const req = { snapshotter: sn, key: c.key ?? '', parent: c.parent ?? '' };
          const refused: Promise<unknown> = c.view
            ? callUnary(side.client, Snapshots.method.view, req, md(c.lease))
            : callUnary(side.client, Snapshots.method.prepare, req, md(c.lease));
          out.push(await answer(refused));
          const commit = (key: string, name: string, lease?: string) =>
            callUnary(side.client, Snapshots.method.commit, { snapshotter: sn, key, name }, md(lease));
          await callUnary(side.client, Snapshots.method.prepare, { snapshotter: sn, key: 'k' }, md('held'));
          await commit('k', 'c', 'held');
          out.push(await answer(commit('c', 'c2')));
        }
        return out;
      });
      // The number of `c` in each namespace: 2 where nothing was spent before `k` and `c`.
      const numbers = shown
        .filter((_, i) => i % 2 === 1)
        .map((a) => /"snapshots-\d+-\d+\/(\d+)\/c"/.exec((a as { details: string }).details)?.[1]);
      assert.deepEqual(numbers, ['3', '3', '2', '3', '3', '3']);
    });
  }

  for (const snapshotter of ['native', 'overlayfs']) {
    test(`${snapshotter}: messages name the backend key containerd numbers per namespace`, async () => {
      // containerd's backend knows a snapshot as <namespace>/<n>/<key>, n from a sequence of the namespace
      // that every snapshot made and every commit takes (a prepare its backend refuses too, a refused
      // commit not), and which starts afresh when the namespace is deleted.
      const shown = await both.sameOnBoth(async (side, ns) => {
        const ctr = async (args: string[]) => {
          const r = await runProcess(CTR, [
            '--address',
            side.address,
            '-n',
            ns,
            'snapshots',
            '--snapshotter',
            snapshotter,
            ...args,
          ]);
          return `${r.code} ${r.stderr.replaceAll(ns, 'NS')}`;
        };
        // The view is made over the API with a gc.root label, where ctr makes it with none: unheld, a
        // collection the session's own removals schedule could take it before its rm, on either side (a
        // full-suite run once saw `snapshot v1 does not exist` there). It spends its number all the same.
        const view = async (key: string, parent: string) => {
          const r = await answer(
            callUnary(
              side.client,
              Snapshots.method.view,
              { snapshotter, key, parent, labels: { 'containerd.io/gc.root': 'parity' } },
              { metadata: metadataWith({ 'containerd-namespace': ns }) },
            ),
          );
          return r === 'OK' ? '0 ' : `1 ${JSON.stringify(r)}`;
        };
        const session = async () => [
          await ctr(['prepare', 'a1']),
          await ctr(['prepare', 'a2', 'a1']),
          await ctr(['view', 'a3', 'a1']),
          await ctr(['prepare', 'a4', 'missing']),
          await ctr(['commit', 'c1', 'a1']),
          await ctr(['commit', 'c2', 'c1']),
          await ctr(['mounts', '/mnt', 'c1']),
          await view('v1', 'c1'),
          // containerd's native backend fails this commit on a directory a view never has (lstat …:
          // unknown), a path of its own; overlayfs says what is wrong.
          ...(snapshotter === 'overlayfs' ? [await ctr(['commit', 'c3', 'v1'])] : []),
          await ctr(['prepare', 'a5', 'c1']),
          await ctr(['commit', 'c5', 'a5']),
          await ctr(['mounts', '/mnt', 'c5']),
          await ctr(['rm', 'c5', 'v1', 'c1']),
        ];
        const first = await session();
        // Asked again for a few seconds: one full-suite run saw this refused on both sides at once (exit
        // 1, cause not kept), which neither reproduced alone; the first refusal's words go to the log.
        let gone = await runProcess(CTR, ['--address', side.address, 'namespaces', 'rm', ns]);
        if (gone.code !== 0) console.error(`namespaces rm ${ns} refused at first: ${gone.stderr}`);
        for (let i = 0; gone.code !== 0 && i < 20; i++) {
          await new Promise((r) => setTimeout(r, 250));
          gone = await runProcess(CTR, ['--address', side.address, 'namespaces', 'rm', ns]);
        }
        return [first, gone.code, await session()];
      });
      const [first, gone, again] = shown as [string[], number, string[]];
      assert.equal(gone, 0);
      assert.deepEqual(again, first);
      assert.ok(
        first.includes(
          '1 ctr: failed to commit snapshot: snapshot "NS/4/c1" is not active: failed precondition\n',
        ),
        first.join(''),
      );
    });
  }
});
