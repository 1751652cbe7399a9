// Hostile and unlucky inputs against a real `strata daemon`: each test replays an attack at a size that
// runs in seconds and checks that the daemon still answers another client meanwhile. Grow this corpus
// with every attack found; never weaken one to make it pass.
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import type * as grpc from '@grpc/grpc-js';
import { Content } from '../../src/api/gen/containerd/services/content/v1/content_pb.ts';
import { Events } from '../../src/api/gen/containerd/services/events/v1/events_pb.ts';
import { Images } from '../../src/api/gen/containerd/services/images/v1/images_pb.ts';
import { Namespaces } from '../../src/api/gen/containerd/services/namespaces/v1/namespace_pb.ts';
import { callServerStream, callUnary } from '../../src/api/grpc/client.ts';
import { CTR, startDaemon, type TestDaemon } from '../helpers/daemon.ts';
import { runCommand, runProcess, waitFor } from '../helpers/process.ts';
import { removeTempDir, tempDir } from '../helpers/tmp.ts';

const BIN = new URL('../../bin/strata', import.meta.url).pathname;

const sha256 = (b: Buffer | string): string => `sha256:${createHash('sha256').update(b).digest('hex')}`;

/** `ctr content ingest` of `data` into `ns`, as a user pipes it; returns its digest. */
async function ingest(d: TestDaemon, ns: string, data: Buffer): Promise<string> {
  const digest = sha256(data);
  await runCommand(
    CTR,
    ['--address', d.address, '--namespace', ns, 'content', 'ingest', '--expected-digest', digest, digest],
    { input: data, env: { CONTAINERD_ADDRESS: undefined, CONTAINERD_NAMESPACE: undefined } },
  );
  return digest;
}

/** Images.Create of a manifest image named `name` in `ns`. */
function createImage(
  client: grpc.Client,
  d: TestDaemon,
  ns: string,
  name: string,
  labels: Record<string, string> = {},
) {
  const target = { mediaType: 'application/vnd.oci.image.manifest.v1+json', digest: sha256(name), size: 1n };
  return callUnary(
    client,
    Images.method.create,
    { image: { name, labels, target } },
    { metadata: d.metadata(ns) },
  );
}

describe('hostile inputs against the daemon', () => {
  let d: TestDaemon;
  let attacker: grpc.Client;
  let bystander: grpc.Client;

  before(async () => {
    d = await startDaemon();
    attacker = d.client();
    bystander = d.client();
  });
  after(() => d.stop());

  test("a big index's child labels: one Content.Update with 20,000 paths, as ctr's pull sends it", async () => {
    // containerd's SetChildrenMappedLabels labels an index with one `labels.<key>` path per manifest, all
    // in one Update. Rebuilding the label map per path made this quadratic: 10,000 paths held the event
    // loop for 25-40 s, past the client's 30 s deadline and every other client's patience.
    const index = await ingest(d, 'default', Buffer.from('{"schemaVersion":2,"manifests":[]}'));
    const n = 20_000;
    const labels: Record<string, string> = {};
    const paths: string[] = [];
    for (let i = 0; i < n; i++) {
      const key = `containerd.io/gc.ref.content.m.${i}`;
      labels[key] = sha256(`manifest ${i}`);
      paths.push(`labels.${key}`);
    }
    const [res] = await Promise.all([
      callUnary(
        attacker,
        Content.method.update,
        { info: { digest: index, labels }, updateMask: { paths } },
        { metadata: d.metadata('default'), timeoutMs: 30_000 },
      ),
      callUnary(bystander, Images.method.list, {}, { metadata: d.metadata('other') }),
    ]);
    assert.equal(Object.keys(res.info!.labels).length, n);
    assert.equal(res.info!.labels['containerd.io/gc.ref.content.m.19999'], sha256('manifest 19999'));
    // One more path on the big map, and a removal, keep the rest.
    const again = await callUnary(
      attacker,
      Content.method.update,
      {
        info: { digest: index, labels: { extra: 'x' } },
        updateMask: { paths: ['labels.extra', 'labels.containerd.io/gc.ref.content.m.0'] },
      },
      { metadata: d.metadata('default') },
    );
    assert.equal(Object.keys(again.info!.labels).length, n);
    assert.equal(again.info!.labels.extra, 'x');
    assert.equal(again.info!.labels['containerd.io/gc.ref.content.m.0'], undefined);
  });

  test('a costly `~=` filter does not hold up other clients (ctr -n other images ls answers meanwhile)', async () => {
    // `(?:.*n){1000}x` is linear-time but costly on a 4,000-byte label (~0.2 s here); run on the event
    // loop, it made every other client wait for the whole listing. Six labels of their own keep the
    // listing busy for about a second, so other clients' rounds fit inside it.
    const ns = 'regex-victim';
    const label = `${'n'.repeat(998)}x`.repeat(4);
    const images = 6;
    for (let i = 0; i < images; i++) {
      // A label of its own per image: the same value twice is matched once.
      await createImage(attacker, d, ns, `example.com/${'n'.repeat(4000)}/${i}:x`, { big: `${label}${i}` });
    }
    await createImage(bystander, d, 'other', 'example.com/bystander:1');
    let done = false;
    const slow = callUnary(
      attacker,
      Images.method.list,
      { filters: ['labels.big~=(?:.*n){1000}x', 'name~=(?i)n{1000}x'] },
      { metadata: d.metadata(ns), timeoutMs: 120_000 },
    ).finally(() => {
      done = true;
    });
    // Give the costly listing a head start, so the others arrive while it runs; then count the rounds of
    // other clients answered before it ends (none while it held the event loop).
    await new Promise((r) => setTimeout(r, 100));
    let rounds = 0;
    while (!done) {
      const [ctrOut, filtered] = await Promise.all([
        d.ctrOk(['images', 'ls', '-q'], { namespace: 'other' }),
        callUnary(
          bystander,
          Images.method.list,
          { filters: ['name~=^example\\.com/by'] },
          { metadata: d.metadata('other') },
        ),
      ]);
      assert.equal(ctrOut.trim(), 'example.com/bystander:1');
      assert.deepEqual(
        filtered.images.map((i) => i.name),
        ['example.com/bystander:1'],
      );
      if (!done) rounds++;
    }
    assert.equal((await slow).images.length, images);
    assert.ok(rounds > 0, 'no other client was answered while the costly filter ran');
  });

  test('a costly `~=` in event subscriptions does not hold up the change that publishes, nor other clients', async () => {
    // Six `ctr events` with the pattern of the test above on an image label: tested as the image was
    // created, the publishing call held the event loop for each subscriber in turn (~0.2 s apiece here),
    // and no other client was answered until every subscriber had been handed the event.
    const ns = 'events-victim';
    const pattern = 'event.labels.big~="(?:.*n){1000}x"';
    const stop = new AbortController();
    const subscribers = 6;
    const seen: Array<Set<string>> = [];
    const streams: Promise<void>[] = [];
    for (let i = 0; i < subscribers; i++) {
      const topics = new Set<string>();
      seen.push(topics);
      const stream = callServerStream(
        attacker,
        Events.method.subscribe,
        { filters: [pattern, 'topic=="/namespaces/create"'] },
        { metadata: d.metadata(ns), signal: stop.signal },
      );
      streams.push(
        (async () => {
          for await (const e of stream) topics.add(e.topic);
        })().catch(() => {}),
      );
    }
    try {
      // Subscribed once each has seen a namespace made.
      let probes = 0;
      await waitFor(async () => {
        await callUnary(
          bystander,
          Namespaces.method.create,
          { namespace: { name: `events-probe-${++probes}` } },
          { metadata: d.metadata(ns) },
        );
        return seen.every((t) => t.has('/namespaces/create'));
      });
      // The test above may have made it already.
      await createImage(bystander, d, 'other', 'example.com/bystander:1').catch((err: grpc.ServiceError) => {
        if (err.code !== 6) throw err; // ALREADY_EXISTS
      });
      const delivered = () => seen.every((t) => t.has('/images/create'));
      await createImage(attacker, d, ns, 'example.com/costly:1', { big: `${'n'.repeat(998)}x`.repeat(4) });
      let rounds = 0;
      while (!delivered()) {
        const out = await d.ctrOk(['images', 'ls', '-q'], { namespace: 'other' });
        assert.equal(out.trim(), 'example.com/bystander:1');
        if (!delivered()) rounds++;
      }
      assert.ok(rounds > 0, 'no other client was answered while the subscriptions tested the event');
    } finally {
      stop.abort();
      await Promise.all(streams);
    }
  });

  test('`~=` keeps containerd semantics: an invalid or refused pattern matches nothing', async () => {
    const md = d.metadata('regex-semantics');
    await createImage(bystander, d, 'regex-semantics', 'example.com/bystander:1');
    for (const pattern of ['a{1001}', '(?=x)', '(', '\\1']) {
      const r = await callUnary(
        bystander,
        Images.method.list,
        { filters: [`name~=${JSON.stringify(pattern)}`] },
        { metadata: md },
      );
      assert.deepEqual(r.images, [], pattern);
    }
    const folded = await callUnary(
      bystander,
      Images.method.list,
      { filters: ['name~=(?i)^EXAMPLE\\.COM/BY'] },
      { metadata: md },
    );
    assert.deepEqual(
      folded.images.map((i) => i.name),
      ['example.com/bystander:1'],
    );
  });
});

describe('ownership of a state directory', () => {
  const alive = (pid: number): boolean => {
    try {
      process.kill(pid, 0);
      return true;
    } catch {
      return false;
    }
  };

  test('a stale daemon.pid naming a live process does not block a start; kill -9 frees the root', async (t) => {
    const root = await tempDir('daemon-owner');
    t.after(() => removeTempDir(root));
    // A crash leaves daemon.pid behind, and its PID is reused: here by this very (live) test process.
    await writeFile(join(root, 'daemon.pid'), `${process.pid}\n`);
    const d = await startDaemon({ root, t });
    const pid = Number.parseInt(await readFile(join(root, 'daemon.pid'), 'utf8'), 10);
    assert.notEqual(pid, process.pid);

    // While it runs, a second daemon on the root is refused and says who holds it.
    const second = await runProcess(BIN, ['daemon', '--root', root, '--address', join(root, 'other.sock')], {
      timeoutMs: 30_000,
    });
    assert.equal(second.code, 1);
    assert.match(
      second.stdout,
      new RegExp(`state directory .* is in use by another daemon \\(pid ${pid}\\)`),
    );
    await d.ctrOk(['images', 'ls']);

    // kill -9: no cleanup runs, the kernel drops the lock; the next start takes the root over.
    process.kill(pid, 'SIGKILL');
    await waitFor(() => !alive(pid), 10_000, { what: 'the killed daemon to go' });
    await d.restart();
    assert.match(await d.ctrOk(['images', 'ls']), /REF/);
  });
});
