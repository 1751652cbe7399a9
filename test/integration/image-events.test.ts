// Every image write is announced to the daemon's Events subscribers, as containerd announces its own:
// `ctr events` against `strata up` sees /images/create, /images/update and /images/delete for images
// written through the first image API (containerd.v1.Images) and for manifests skopeo pushes to, and the
// registry API deletes from, the hosted registry on the same store. The daemon's metrics count the
// open subscription.
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import { Images } from '../../src/api/gen/containerd/v1/images_pb.ts';
import { callUnary, createClient, metadataWith } from '../../src/api/grpc/client.ts';
import { DEFAULT_HOSTED_NAMESPACE } from '../../src/hosted/registry.ts';
import { ctrEvents } from '../helpers/daemon.ts';
import { raw } from '../helpers/hosted.ts';
import { pushFilesImage } from '../helpers/images.ts';
import { type ServerProcess, waitFor } from '../helpers/process.ts';
import { removeTempDir, tempDir } from '../helpers/tmp.ts';
import { ctrOk, metricSample, startStrataUp, type UpAddresses } from '../helpers/up.ts';

let work: string;
let server: ServerProcess | undefined;
let at: UpAddresses;

before(async () => {
  work = await tempDir('image-events');
  const config = join(work, 'up.yaml');
  await writeFile(
    config,
    [
      'daemon: { address: strata.sock, snapshotter: native }',
      'registry: { listen: "127.0.0.1:0" }',
      'specs: { listen: "127.0.0.1:0" }',
      'builder: { listen: "127.0.0.1:0", storageDriver: vfs }',
      'metrics: "127.0.0.1:0"',
      '',
    ].join('\n'),
  );
  ({ server, at } = await startStrataUp({ work, root: join(work, 'root'), config, n: 1 }));
});

after(async () => {
  await server?.stop();
  if (work) await removeTempDir(work);
});

test('ctr events sees the image writes of the first image API and of the hosted registry', async () => {
  const events = ctrEvents(at.socket, []);
  const client = createClient(`unix://${at.socket}`);
  try {
    // Subscribed once a namespace it makes shows up.
    let probes = 0;
    await waitFor(async () => {
      await ctrOk(at.socket, ['namespaces', 'create', `probe-${++probes}`]);
      return events.lines().some((l) => l.includes('/namespaces/create'));
    });

    const digest = (s: string) => `sha256:${createHash('sha256').update(s).digest('hex')}`;
    const target = (s: string) => ({
      mediaType: 'application/vnd.oci.image.manifest.v1+json',
      digest: digest(s),
      size: 10n,
    });
    const opts = { metadata: metadataWith({ 'containerd-namespace': 'early' }) };
    await callUnary(client, Images.method.put, { image: { name: 'old-api', target: target('one') } }, opts);
    await callUnary(client, Images.method.put, { image: { name: 'old-api', target: target('two') } }, opts);
    await callUnary(client, Images.method.delete, { name: 'old-api' }, opts);

    const pushed = await pushFilesImage({ host: at.registryHost }, 'team/app', { layers: [{ a: '1\n' }] });
    const del = await raw(at.registryUrl, 'DELETE', `/v2/team/app/manifests/${pushed.digest}`);
    assert.equal(del.status, 202);

    // The daemon's metrics count the subscription.
    const metrics = await (await fetch(`${at.opsUrl}/metrics`)).text();
    assert.equal(metricSample(metrics, 'strata_events_subscribers', []), 1);

    await ctrOk(at.socket, ['namespaces', 'create', 'the-end']);
    await waitFor(() => events.lines().some((l) => l.includes('the-end')));
    const stamp = /^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d(\.\d+)? \+0000 UTC /;
    const shown = events
      .lines()
      .filter((l) => l.includes('/images/'))
      .map((l) => l.replace(stamp, '').replaceAll(pushed.digest, 'DIGEST'));
    const hosted = DEFAULT_HOSTED_NAMESPACE;
    assert.deepEqual(shown, [
      'early /images/create {"name":"old-api"}',
      'early /images/update {"name":"old-api"}',
      'early /images/delete {"name":"old-api"}',
      `${hosted} /images/create {"name":"team/app@DIGEST","labels":{"strata.hosted/artifact-type":"application/vnd.oci.image.config.v1+json"}}`,
      `${hosted} /images/create {"name":"team/app:latest"}`,
      `${hosted} /images/delete {"name":"team/app:latest"}`,
      `${hosted} /images/delete {"name":"team/app@DIGEST"}`,
    ]);
  } finally {
    client.close();
    await events.stop();
  }
});
