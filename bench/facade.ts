// The registry facade side by side with its anchors, in one run:
//   (a) a 256 MiB cached layer: `strata facade` vs docker-registry (same blob) vs nginx (the facade's own
//       cache file, sendfile) — curl to /dev/null, interleaved rounds; targets ≥ 1.0× registry, ≥ 0.6× nginx
//   (b) warm composite manifest GETs/s with wrk vs docker-registry serving the same manifest stored — ≥ 10×
//   (c) `ctr images pull` (fresh containerd each round) of the composite image from the facade vs the same
//       image copied into docker-registry — ≤ 1.1× time
//   (d) peak RSS of the facade process during 50 concurrent downloads of the 256 MiB layer — ≤ 300 MiB
// The facade runs as `bin/strata facade` with --log-level warn (docker-registry's access log is off too).
//
//   node bench/facade.ts        (LAYER_MIB=256 ROUNDS=5 PULL_ROUNDS=5 WRK_SECONDS=5 CONCURRENT=50)
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { startContainerd } from '../test/helpers/containerd.ts';
import { pushBusybox, pushFilesImage, skopeoCopy } from '../test/helpers/images.ts';
import { runCommand } from '../test/helpers/process.ts';
import { startRegistry } from '../test/helpers/registry.ts';
import { Cleanup, tempDir } from '../test/helpers/tmp.ts';
import { startFixedSpecFacade } from './facade-server.ts';
import { startNginx } from './nginx.ts';
import { mib, statusField } from './proc.ts';
import { intArg, median, printTable, timed } from './stats.ts';

const LAYER_MIB = intArg('LAYER_MIB', 256);
const ROUNDS = intArg('ROUNDS', 5);
const PULL_ROUNDS = intArg('PULL_ROUNDS', 5);
const WRK_SECONDS = intArg('WRK_SECONDS', 5);
const CONCURRENT = intArg('CONCURRENT', 50);
const OCI_MANIFEST = 'application/vnd.oci.image.manifest.v1+json';

/** Downloads `url` with curl into /dev/null; returns MiB/s, after checking status and size. */
async function curlRate(url: string, size: number): Promise<number> {
  const out = await runCommand('curl', [
    '-sS',
    '-o',
    '/dev/null',
    '-w',
    '%{http_code} %{size_download} %{time_total}',
    url,
  ]);
  const [code, bytes, seconds] = out.trim().split(' ');
  if (code !== '200' || Number(bytes) !== size)
    throw new Error(`${url}: HTTP ${code}, ${bytes} of ${size} bytes`);
  return size / 2 ** 20 / Number(seconds);
}

/** wrk for a few seconds at 16 connections; requests per second, after checking every answer was 2xx. */
async function wrkRate(url: string): Promise<number> {
  const out = await runCommand(
    'wrk',
    ['-t1', '-c16', `-d${WRK_SECONDS}s`, '-H', `Accept: ${OCI_MANIFEST}`, url],
    { timeoutMs: (WRK_SECONDS + 30) * 1000 },
  );
  if (/Non-2xx/.test(out) || /Socket errors/.test(out)) throw new Error(`wrk ${url}: errors\n${out}`);
  const m = /Requests\/sec:\s+([\d.]+)/.exec(out);
  if (!m) throw new Error(`wrk ${url}: no rate in\n${out}`);
  return Number(m[1]);
}

const cleanup = new Cleanup();
try {
  const reg = await startRegistry();
  cleanup.add(() => reg.stop());
  const work = await tempDir('bench-facade');
  cleanup.addDir(work);

  console.log(`pushing busybox and an IDE image with a ${LAYER_MIB} MiB layer to ${reg.host} …`);
  const busybox = await pushBusybox(reg, 'bench/busybox');
  const ide = await pushFilesImage(reg, 'bench/ide', {
    layers: [{ 'ide/bin/big.bin': LAYER_MIB * 2 ** 20 }],
    env: ['GITPOD_ENV_APPEND_PATH=/ide/bin:'],
  });
  const big = ide.layerDescriptors[0]!;

  const facade = await startFixedSpecFacade(work, reg.host, { baseRef: busybox.ref, ideRef: ide.ref });
  cleanup.add(() => facade.stop());
  const { host: facadeHost, url: facadeUrl, cacheDir, pid: facadePid } = facade;
  const rssLog: [string, number][] = [];
  const noteRss = async (phase: string) => rssLog.push([phase, await statusField(facadePid, 'VmRSS')]);
  await noteRss('idle');

  // The composite copied into docker-registry as a plain image: same manifest, config and layers. This
  // also fills the facade's cache with every layer.
  const composite = `${facadeHost}/fixed/bench:latest`;
  const plain = `${reg.host}/bench/plain:latest`;
  await skopeoCopy(composite, plain);
  const nginx = await startNginx(join(cacheDir, 'blobs', 'sha256'));
  cleanup.add(() => nginx.stop());

  // (a) cached layer throughput
  const urls = {
    facade: `${facadeUrl}/v2/fixed/bench/blobs/${big.digest}`,
    'docker-registry': `${reg.url}/v2/bench/plain/blobs/${big.digest}`,
    nginx: `${nginx.url}/${big.digest.slice('sha256:'.length)}`,
  };
  const rates: Record<keyof typeof urls, number[]> = { facade: [], 'docker-registry': [], nginx: [] };
  const names = Object.keys(urls) as (keyof typeof urls)[];
  for (const n of names) await curlRate(urls[n], big.size); // warm page cache and connections' paths
  for (let round = 0; round < ROUNDS; round++) {
    // Rotate who goes first.
    for (let i = 0; i < names.length; i++) {
      const n = names[(round + i) % names.length]!;
      rates[n].push(await curlRate(urls[n], big.size));
    }
  }
  await noteRss('after (a)');
  const fA = median(rates.facade);
  const rA = median(rates['docker-registry']);
  const nA = median(rates.nginx);

  // (b) warm composite manifest GETs
  const manifestUrls = {
    facade: `${facadeUrl}/v2/fixed/bench/manifests/latest`,
    'docker-registry': `${reg.url}/v2/bench/plain/manifests/latest`,
  };
  for (const u of Object.values(manifestUrls)) {
    const res = await fetch(u, { headers: { accept: OCI_MANIFEST } });
    if (res.status !== 200) throw new Error(`${u}: HTTP ${res.status}`);
    await res.arrayBuffer();
  }
  const fB = await wrkRate(manifestUrls.facade);
  const rB = await wrkRate(manifestUrls['docker-registry']);
  await noteRss('after (b)');

  // (c) ctr images pull, a fresh containerd each time
  const pulls: { facade: number[]; 'docker-registry': number[] } = { facade: [], 'docker-registry': [] };
  for (let round = 0; round < PULL_ROUNDS; round++) {
    const order: ['facade' | 'docker-registry', string][] = [
      ['facade', composite],
      ['docker-registry', plain],
    ];
    if (round % 2 === 1) order.reverse();
    for (const [n, ref] of order) {
      const ctrd = await startContainerd();
      try {
        pulls[n].push(
          await timed(() => ctrd.ctr(['images', 'pull', '--plain-http', ref], { timeoutMs: 300_000 })),
        );
      } finally {
        await ctrd.stop();
      }
    }
  }
  await noteRss('after (c)');
  const fC = median(pulls.facade);
  const rC = median(pulls['docker-registry']);

  // (d) peak RSS during concurrent downloads: reset the high-water mark, then sample VmRSS too.
  await writeFile(`/proc/${facadePid}/clear_refs`, '5');
  const rssBefore = await statusField(facadePid, 'VmRSS');
  let sampling = true;
  let polledPeak = 0;
  const sampler = (async () => {
    while (sampling) {
      polledPeak = Math.max(polledPeak, await statusField(facadePid, 'VmRSS'));
      await sleep(20);
    }
  })();
  const concurrentMs = await timed(() =>
    Promise.all(Array.from({ length: CONCURRENT }, () => curlRate(urls.facade, big.size))),
  );
  sampling = false;
  await sampler;
  const hwm = await statusField(facadePid, 'VmHWM');
  const peak = Math.max(hwm, polledPeak);

  console.log(`\n(a) ${mib(big.size)} MiB cached layer, curl → /dev/null, median of ${ROUNDS} rounds`);
  printTable([
    ['server', 'median MiB/s', 'rounds'],
    ...names.map((n) => [n, median(rates[n]).toFixed(0), rates[n].map((r) => r.toFixed(0)).join(' ')]),
  ]);
  console.log(`ratio facade/docker-registry: ${(fA / rA).toFixed(2)}  (target ≥ 1.0)`);
  console.log(`ratio facade/nginx:           ${(fA / nA).toFixed(2)}  (target ≥ 0.6)`);

  console.log(`\n(b) warm manifest GETs, wrk -t1 -c16 -d${WRK_SECONDS}s`);
  printTable([
    ['server', 'req/s'],
    ['facade (composite)', fB.toFixed(0)],
    ['docker-registry (stored)', rB.toFixed(0)],
  ]);
  console.log(`ratio facade/docker-registry: ${(fB / rB).toFixed(2)}  (target ≥ 10)`);

  console.log(
    `\n(c) ctr images pull (${mib(ide.blobBytes + busybox.blobBytes)} MiB), fresh containerd, median of ${PULL_ROUNDS}`,
  );
  printTable([
    ['source', 'median ms', 'rounds'],
    ['facade (composite)', fC.toFixed(0), pulls.facade.map((x) => x.toFixed(0)).join(' ')],
    ['docker-registry (plain)', rC.toFixed(0), pulls['docker-registry'].map((x) => x.toFixed(0)).join(' ')],
  ]);
  console.log(`ratio facade/docker-registry (time): ${(fC / rC).toFixed(2)}  (target ≤ 1.1)`);

  console.log(`\n(d) ${CONCURRENT} concurrent downloads of the ${mib(big.size)} MiB layer from the facade`);
  printTable([
    ['measure', 'MiB'],
    ...rssLog.map(([phase, rss]) => [`RSS ${phase}`, mib(rss)]),
    ['RSS before', mib(rssBefore)],
    ['peak RSS (VmHWM after reset)', mib(hwm)],
    ['peak RSS (polled VmRSS)', mib(polledPeak)],
  ]);
  console.log(
    `aggregate ${((CONCURRENT * big.size) / 2 ** 20 / (concurrentMs / 1000)).toFixed(0)} MiB/s; peak ${mib(peak)} MiB  (target ≤ 300)`,
  );
} finally {
  await cleanup.run();
}
