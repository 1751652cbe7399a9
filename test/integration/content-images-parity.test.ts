// The Content and Images services side by side with a real containerd 1.6: the same ctr session or the
// same raw gRPC calls against each, and what a client sees (exit codes, ctr's messages, gRPC codes and
// details, what is stored) compared. Each case is one where the two once differed.
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import type { MessageInitShape } from '@bufbuild/protobuf';
import * as grpc from '@grpc/grpc-js';
import {
  Content,
  WriteAction,
  type WriteContentRequestSchema,
} from '../../src/api/gen/containerd/services/content/v1/content_pb.ts';
import { Images } from '../../src/api/gen/containerd/services/images/v1/images_pb.ts';
import { callBidi, callUnary, metadataWith } from '../../src/api/grpc/client.ts';
import { CTR, runCtr } from '../helpers/daemon.ts';
import { failure } from '../helpers/grpc-assert.ts';
import { runProcess } from '../helpers/process.ts';
import { answer, type Side, type SideBySide, startSideBySide } from '../helpers/side-by-side.ts';
import { removeTempDir, tempDir } from '../helpers/tmp.ts';

const sha256 = (b: Buffer | string): string => `sha256:${createHash('sha256').update(b).digest('hex')}`;

/** What one ctr run showed its user. */
interface Shown {
  code: number;
  stdout: string;
  stderr: string;
}

describe('content and images side by side with containerd 1.6', () => {
  let both: SideBySide;
  let work: string;

  before(async () => {
    work = await tempDir('content-images-parity');
    both = await startSideBySide();
  });
  after(async () => {
    await both?.stop();
    if (work) await removeTempDir(work);
  });

  const sameOnBoth = (session: (side: Side, ns: string) => Promise<unknown[]>) => both.sameOnBoth(session);

  const ctr = async (side: Side, ns: string, args: string[]): Promise<Shown> => {
    const { code, stdout, stderr } = await runCtr(side.address, args, { namespace: ns, timeoutMs: 60_000 });
    return { code, stdout, stderr };
  };

  /** `ctr content ingest ARGS… < file`. */
  async function ingest(side: Side, ns: string, file: string, args: string[]): Promise<Shown> {
    const { code, stdout, stderr } = await runProcess(
      'sh',
      ['-c', 'f=$1; shift; exec "$@" < "$f"', 'sh', file, CTR, '--address', side.address, '-n', ns].concat([
        'content',
        'ingest',
        ...args,
      ]),
      { timeoutMs: 60_000 },
    );
    return { code, stdout, stderr };
  }

  const md = (ns: string) => metadataWith({ 'containerd-namespace': ns });

  test('ctr content ingest of the wrong size: containerd’s size validation message', async () => {
    const file = join(work, 'nine-bytes');
    await writeFile(file, 'tiny blob');
    const [shown] = await sameOnBoth(async (side, ns) => [
      await ingest(side, ns, file, ['--expected-size', '5', 'short']),
    ]);
    assert.deepEqual(shown, {
      code: 1,
      stdout: '',
      stderr:
        'ctr: failed commit on ref "short": commit failed: "short" failed size validation: 9 != 5: failed precondition\n',
    });
  });

  test('a negative expected size is kept: the commit fails containerd’s size validation, the STAT echoes it', async () => {
    const file = join(work, 'three-bytes');
    await writeFile(file, 'hi\n');
    const shown = await sameOnBoth(async (side, ns) => {
      const stat = callBidi(side.client, Content.method.write, { metadata: md(ns) });
      const replies = stat.responses[Symbol.asyncIterator]();
      await stat.send({ action: WriteAction.STAT, ref: 'stat-only', total: -1n });
      const reply = await replies.next();
      stat.cancel();
      return [
        reply.done ? 'ended' : Number(reply.value.total),
        await ingest(side, ns, file, ['--expected-size', '-1', 'negative']),
        (await ctr(side, ns, ['content', 'active'])).stdout
          .split('\n')
          .filter((l) => l.startsWith('negative\t')).length,
        (await ctr(side, ns, ['content', 'ls', '--quiet'])).stdout,
      ];
    });
    assert.deepEqual(shown, [
      -1,
      {
        code: 1,
        stdout: '',
        stderr:
          'ctr: failed commit on ref "negative": commit failed: "negative" failed size validation: 3 != -1: failed precondition\n',
      },
      1,
      '',
    ]);
  });

  test('an ingest resumed without a declared size or digest does not inherit an earlier attempt’s', async () => {
    // The first attempt declares a size and digest the input does not have and fails, leaving its bytes;
    // the retry declares neither. containerd checks only what the committing session declared.
    const body = Buffer.from('the bytes of the retried ingest\n');
    const file = join(work, 'retried');
    await writeFile(file, body);
    const wrongDigest = sha256('something else');
    const shown = await sameOnBoth(async (side, ns) => [
      (await ingest(side, ns, file, ['--expected-size', '100', 'retried'])).code,
      (await ingest(side, ns, file, ['retried'])).code,
      (await ctr(side, ns, ['content', 'ls', '--quiet'])).stdout,
      (await ingest(side, ns, file, ['--expected-digest', wrongDigest, 'again'])).code,
      (await ingest(side, ns, file, ['again'])).code,
      (await ctr(side, ns, ['content', 'active'])).stdout.trim().split('\n').length,
    ]);
    assert.deepEqual(shown, [1, 0, `${sha256(body)}\n`, 1, 0, 1]);
  });

  test('a writer sharing another namespace’s blob: commit checks and messages', async () => {
    const body = Buffer.from('shared between namespaces\n');
    const d = sha256(body);
    const n = BigInt(body.length);
    const commitShared = async (side: Side, ns: string, ref: string, total: bigint, expected: string) => {
      const call = callBidi(side.client, Content.method.write, { metadata: md(ns) });
      const replies = call.responses[Symbol.asyncIterator]();
      await call.send({ action: WriteAction.STAT, ref, total: n, expected: d });
      const open = await replies.next();
      await call.send({ action: WriteAction.COMMIT, offset: n, total, expected }).catch(() => {});
      const committed = await answer(replies.next(), (r) => (r.done ? 'ended' : r.value.digest));
      call.cancel();
      return [open.done ? 'ended' : Number(open.value.offset), committed];
    };
    await sameOnBoth(async (side, ns) => {
      const write = callBidi(side.client, Content.method.write, { metadata: md(`${ns}-a`) });
      await write.send({ action: WriteAction.COMMIT, ref: 'a', data: body, total: n, expected: d });
      for await (const _ of write.responses) {
        // Drain the commit's reply.
      }
      return [
        await commitShared(side, ns, 'bigger', n + 1n, d),
        await commitShared(side, ns, 'other', n, sha256('not it')),
        await commitShared(side, ns, 'fine', n, d),
      ];
    }).then((shown) =>
      assert.deepEqual(shown, [
        [
          Number(n),
          {
            code: 'FAILED_PRECONDITION',
            details: `"bigger" failed size validation: ${n} != ${n + 1n}: failed precondition`,
          },
        ],
        [
          Number(n),
          { code: 'FAILED_PRECONDITION', details: '"other" unexpected digest: failed precondition' },
        ],
        [Number(n), d],
      ]),
    );
  });

  /** What a Status shows a client, times left out. */
  const shownStatus = (s: { ref: string; offset: bigint; total: bigint; expected: string } | undefined) =>
    s && { ref: s.ref, offset: Number(s.offset), total: Number(s.total), expected: s.expected };

  /** One Write session: sends each message and takes its reply, then ends the call once the session has. */
  async function writeSession(
    side: Side,
    ns: string,
    messages: MessageInitShape<typeof WriteContentRequestSchema>[],
  ): Promise<void> {
    const call = callBidi(side.client, Content.method.write, { metadata: md(ns) });
    const replies = call.responses[Symbol.asyncIterator]();
    for (const m of messages) {
      await call.send(m);
      await replies.next();
    }
    call.end();
    for (let r = await replies.next(); !r.done; r = await replies.next());
  }

  test('statuses name no expected digest, as containerd’s blob store keeps none', async () => {
    const body = Buffer.from('an ingest that declared its digest\n');
    const [listed, status] = await sameOnBoth(async (side, ns) => {
      await writeSession(side, ns, [
        {
          action: WriteAction.WRITE,
          ref: 'declared',
          total: BigInt(body.length),
          expected: sha256(body),
          data: body.subarray(0, 3),
        },
      ]);
      return [
        await answer(callUnary(side.client, Content.method.listStatuses, {}, { metadata: md(ns) }), (r) =>
          r.statuses.map(shownStatus),
        ),
        await answer(
          callUnary(side.client, Content.method.status, { ref: 'declared' }, { metadata: md(ns) }),
          (r) => shownStatus(r.status),
        ),
      ];
    });
    const want = { ref: 'declared', offset: 3, total: body.length, expected: '' };
    assert.deepEqual([listed, status], [[want], want]);
  });

  test('a writer sharing another namespace’s blob has no status until it writes bytes of its own', async () => {
    // containerd's shared writer has no ingest in its blob store: Status does not find it and
    // ListStatuses leaves it out, in that namespace as in any other.
    const body = Buffer.from('a blob a shared writer stands for\n');
    const d = sha256(body);
    const n = BigInt(body.length);
    const shown = await sameOnBoth(async (side, ns) => {
      await writeSession(side, `${ns}-a`, [
        { action: WriteAction.COMMIT, ref: 'a', data: body, total: n, expected: d },
      ]);
      const seen = async (where: string) => {
        const opts = { metadata: md(where) };
        return [
          await answer(callUnary(side.client, Content.method.listStatuses, {}, opts), (r) =>
            r.statuses.map(shownStatus),
          ),
          // containerd's NotFound names a file of its own: the code is what is compared.
          await answer(callUnary(side.client, Content.method.status, { ref: 'shared' }, opts), (r) =>
            shownStatus(r.status),
          ).then((a) => (a && typeof a === 'object' && 'code' in a ? a.code : a)),
        ];
      };
      const call = callBidi(side.client, Content.method.write, { metadata: md(`${ns}-b`) });
      const replies = call.responses[Symbol.asyncIterator]();
      await call.send({ action: WriteAction.STAT, ref: 'shared', total: n, expected: d });
      const stat = await replies.next();
      const whileOpen = [await seen(`${ns}-b`), await seen(`${ns}-a`)];
      call.end();
      for (let r = await replies.next(); !r.done; r = await replies.next());
      const afterClose = await seen(`${ns}-b`);
      // A write from offset 0 starts the ingest afresh (declaring no size), with bytes of its own.
      await writeSession(side, `${ns}-b`, [
        { action: WriteAction.STAT, ref: 'shared', total: n, expected: d },
        { action: WriteAction.WRITE, offset: 0n, data: body.subarray(0, 5) },
      ]);
      return [stat.done ? 'ended' : Number(stat.value.offset), whileOpen, afterClose, await seen(`${ns}-b`)];
    });
    const written = { ref: 'shared', offset: 5, total: 0, expected: '' };
    const none = [[], 'NOT_FOUND'];
    assert.deepEqual(shown, [Number(n), [none, none], none, [[written], written]]);
  });

  test('ctr images label with no labels replaces the target too: containerd’s message', async () => {
    const target = {
      mediaType: 'application/vnd.oci.image.manifest.v1+json',
      digest: sha256('a manifest'),
      size: 10n,
    };
    const [, shown] = await sameOnBoth(async (side, ns) => [
      await answer(
        callUnary(
          side.client,
          Images.method.create,
          { image: { name: 'img', target } },
          { metadata: md(ns) },
        ),
      ),
      await ctr(side, ns, ['images', 'label', 'img']),
    ]);
    assert.deepEqual(shown, {
      code: 1,
      stdout: '',
      stderr: 'ctr: Target.Digest "" invalid: invalid checksum digest format: invalid argument\n',
    });
  });

  test('requests without their image or info are read as empty ones', async () => {
    await sameOnBoth(async (side, ns) => [
      await answer(callUnary(side.client, Images.method.create, {}, { metadata: md(ns) })),
      await answer(callUnary(side.client, Images.method.update, {}, { metadata: md(ns) })),
      await answer(callUnary(side.client, Content.method.update, {}, { metadata: md(ns) })),
    ]);
  });

  test('an annotation without a key is refused and nothing is stored', async () => {
    const target = {
      mediaType: 'application/vnd.oci.image.manifest.v1+json',
      digest: sha256('annotated'),
      size: 10n,
    };
    const refused = async (side: Side, _ns: string, p: Promise<unknown>) => {
      // containerd fails inside its store (Unknown); strata refuses it as InvalidArgument, as for labels.
      const f = await failure(p);
      const want = side.name === 'containerd' ? grpc.status.UNKNOWN : grpc.status.INVALID_ARGUMENT;
      assert.equal(grpc.status[f.code], grpc.status[want], f.details);
      return 'refused';
    };
    await sameOnBoth(async (side, ns) => {
      const annotated = { ...target, annotations: { '': 'v' } };
      const opts = { metadata: md(ns) };
      const create = callUnary(
        side.client,
        Images.method.create,
        { image: { name: 'new', target: annotated } },
        opts,
      );
      const created = await refused(side, ns, create);
      await callUnary(side.client, Images.method.create, { image: { name: 'kept', target } }, opts);
      const update = callUnary(
        side.client,
        Images.method.update,
        { image: { name: 'kept', target: annotated }, updateMask: { paths: ['annotations'] } },
        opts,
      );
      const updated = await refused(side, ns, update);
      const list = await callUnary(side.client, Images.method.list, {}, opts);
      return [created, updated, list.images.map((i) => [i.name, i.target?.annotations])];
    });
  });
});
