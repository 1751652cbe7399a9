// Hostile and unlucky inputs against a real `strata daemon`: each test replays an attack at a size that
// runs in seconds and checks that the daemon still answers another client meanwhile. Grow this corpus
// with every attack found; never weaken one to make it pass.
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { after, before, describe, test } from 'node:test';
import type * as grpc from '@grpc/grpc-js';
import { Content } from '../../src/api/gen/containerd/services/content/v1/content_pb.ts';
import { Images } from '../../src/api/gen/containerd/services/images/v1/images_pb.ts';
import { callUnary } from '../../src/api/grpc/client.ts';
import { CTR, startDaemon, type TestDaemon } from '../helpers/daemon.ts';
import { runCommand } from '../helpers/process.ts';

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
});
