// A cold composite manifest, side by side with docker-registry in one run: each round puts a new spec into
// the facade's spec store (a fresh id naming a base, IDE, supervisor and one ide_layer_ref image that no
// earlier round named, so no tag, manifest or config of it is cached) and times from the put to the end
// of its first manifest response; the anchor is a GET of a stored manifest (a tag not asked for before)
// from the loopback docker-registry holding those images. Median of ROUNDS after one untimed round.
// Prefetch is off, so the request composes (bench/facade-start.ts measures what prefetch brings).
// Target: the facade under 50 ms.
//
//   node bench/facade-cold.ts   (ROUNDS=20)
import { join } from 'node:path';
import { imageSpecJson } from '../src/api/convert/image-spec-json.ts';
import { SpecStore } from '../src/facade/providers/spec-store.ts';
import { digestOf } from '../src/oci/digest.ts';
import { pushBusybox, pushFilesImage } from '../test/helpers/images.ts';
import type { TestRegistry } from '../test/helpers/registry.ts';
import { startRegistry } from '../test/helpers/registry.ts';
import { Cleanup, tempDir } from '../test/helpers/tmp.ts';
import { startFacadeProcess } from './facade-server.ts';
import { intArg, median, printTable, timed } from './stats.ts';

const ROUNDS = intArg('ROUNDS', 20);
const ACCEPT = [
  'application/vnd.oci.image.manifest.v1+json',
  'application/vnd.docker.distribution.manifest.v2+json',
].join(', ');

async function ok(res: Response, what: string): Promise<Response> {
  if (!res.ok) throw new Error(`${what}: HTTP ${res.status} ${await res.text()}`);
  return res;
}

/** Copies `repo:latest` to `repo:tag` with a config that differs by one label: a new image, same layers. */
async function variant(reg: TestRegistry, repo: string, tag: string): Promise<string> {
  const res = await ok(
    await fetch(`${reg.url}/v2/${repo}/manifests/latest`, { headers: { accept: ACCEPT } }),
    repo,
  );
  const mediaType = res.headers.get('content-type')!;
  const manifest = (await res.json()) as { config: { digest: string; size: number } };
  const configRes = await ok(await fetch(`${reg.url}/v2/${repo}/blobs/${manifest.config.digest}`), 'config');
  const config = (await configRes.json()) as { config?: { Labels?: Record<string, string> } };
  config.config = { ...config.config, Labels: { ...config.config?.Labels, 'strata.bench.variant': tag } };
  const bytes = Buffer.from(JSON.stringify(config));
  const digest = digestOf(bytes);
  const upload = await ok(await fetch(`${reg.url}/v2/${repo}/blobs/uploads/`, { method: 'POST' }), 'upload');
  const location = new URL(upload.headers.get('location')!, reg.url);
  location.searchParams.set('digest', digest);
  await ok(await fetch(location, { method: 'PUT', body: bytes }), 'config put');
  manifest.config = { ...manifest.config, digest, size: bytes.length };
  await ok(
    await fetch(`${reg.url}/v2/${repo}/manifests/${tag}`, {
      method: 'PUT',
      headers: { 'content-type': mediaType },
      body: JSON.stringify(manifest),
    }),
    'manifest put',
  );
  return `${reg.host}/${repo}:${tag}`;
}

async function getManifest(url: string): Promise<void> {
  const res = await ok(await fetch(url, { headers: { accept: ACCEPT } }), url);
  await res.arrayBuffer();
}

const cleanup = new Cleanup();
try {
  const reg = await startRegistry();
  cleanup.add(() => reg.stop());
  const work = await tempDir('bench-facade-cold');
  cleanup.addDir(work);
  console.log(`pushing a base, an IDE, a supervisor and an IDE-layer image to ${reg.host} …`);
  await pushBusybox(reg, 'base');
  const small = (path: string) => [{ [path]: 4096 }];
  await pushFilesImage(reg, 'ide', {
    layers: small('ide/bin/ide'),
    env: ['GITPOD_ENV_APPEND_PATH=/ide/bin:'],
  });
  await pushFilesImage(reg, 'supervisor', { layers: small('.supervisor/supervisor'), format: 'docker' });
  await pushFilesImage(reg, 'ide-layer', { layers: small('ide-layer/x') });
  const specDir = join(work, 'specs');
  const store = new SpecStore(specDir, imageSpecJson);
  const facade = await startFacadeProcess({
    dir: join(work, 'facade'),
    specProviders: `{ store: { dir: "${specDir}" } }`,
    plainHttpHosts: [reg.host],
    // The put would start a prefetch composing the same spec (the request joins it) and fetching its
    // layers meanwhile; this measures the composition a request does itself.
    extra: ['prefetch: { enabled: false }'],
  });
  cleanup.add(() => facade.stop());

  const facadeMs: number[] = [];
  const registryMs: number[] = [];
  for (let round = 0; round <= ROUNDS; round++) {
    const tag = `r${round}`;
    const [base, ide, supervisor, ideLayer] = await Promise.all(
      ['base', 'ide', 'supervisor', 'ide-layer'].map((repo) => variant(reg, repo, tag)),
    );
    const id = `ws-${round}`;
    const spec = {
      baseRef: base!,
      ideRef: ide!,
      supervisorRef: supervisor!,
      ideLayerRefs: [ideLayer!],
      contentLayers: [],
    };
    const f = await timed(async () => {
      await store.put(id, spec);
      await getManifest(`${facade.url}/v2/remote/${id}/manifests/latest`);
    });
    // A tag of the registry nobody asked for yet (the facade asked for base:rN, not ide-layer's manifest
    // by this client); stored, so nothing is composed.
    const r = await timed(() => getManifest(`${reg.url}/v2/ide-layer/manifests/${tag}`));
    if (round === 0) continue;
    facadeMs.push(f);
    registryMs.push(r);
  }
  const f = median(facadeMs);
  const r = median(registryMs);
  console.log(`\ncold composite manifest (4 upstream images), median of ${ROUNDS}`);
  printTable([
    ['side', 'median ms', 'rounds'],
    ['facade: spec put → first manifest', f.toFixed(1), facadeMs.map((x) => x.toFixed(0)).join(' ')],
    ['docker-registry: stored manifest GET', r.toFixed(1), registryMs.map((x) => x.toFixed(0)).join(' ')],
  ]);
  console.log(
    `ratio facade/docker-registry: ${(f / r).toFixed(1)}; facade ${f.toFixed(1)} ms (target < 50 ms)`,
  );
} finally {
  await cleanup.run();
}
