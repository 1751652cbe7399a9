// The facade under load, side by side with docker-registry in one run: CONNECTIONS keep-alive clients for
// DURATION seconds send a mix of warm manifest GETs (by tag and by digest), whole blob GETs (config and
// layers) and 64 KiB Range reads of the biggest layer; the facade serves a composed image (busybox base +
// an IDE image, every blob already in its cache), docker-registry the same image copied into it as a plain
// image (same manifest, config and layers). The load comes from bench/load-gen.ts in its own process;
// with 2 cores, generator and server share the CPU for both sides alike. Prints requests/s, p50/p99 and
// errors for both (0 required), the ratios, per-kind latencies, CPU seconds of each server and of the
// generator, and the facade's peak RSS during its run. Targets: ≥ 1.0× docker-registry's requests/s,
// ≤ 1.0× its p99, peak RSS ≤ 300 MiB.
//
//   node bench/facade-load.ts   (DURATION=60 WARMUP=5 CONNECTIONS=200 LAYER_MIB=8 RANGE_KIB=64)
import { pushBusybox, pushFilesImage, skopeoCopy } from '../test/helpers/images.ts';
import { runCommand } from '../test/helpers/process.ts';
import { startRegistry } from '../test/helpers/registry.ts';
import { Cleanup, tempDir } from '../test/helpers/tmp.ts';
import { startFixedSpecFacade } from './facade-server.ts';
import type { LoadPlan, LoadRequest, LoadResult } from './load-gen.ts';
import { cpuSeconds, mib, peakRss, statusField } from './proc.ts';
import { intArg, printTable } from './stats.ts';

const DURATION = intArg('DURATION', 60);
const WARMUP = intArg('WARMUP', 5);
const CONNECTIONS = intArg('CONNECTIONS', 200);
const LAYER_MIB = intArg('LAYER_MIB', 8);
const RANGE_KIB = intArg('RANGE_KIB', 64);
const LOAD_GEN = new URL('./load-gen.ts', import.meta.url).pathname;
const ACCEPT = [
  'application/vnd.oci.image.manifest.v1+json',
  'application/vnd.docker.distribution.manifest.v2+json',
].join(', ');

interface Manifest {
  config: { digest: string; size: number };
  layers: { digest: string; size: number }[];
}

/** The request mix for one repository of a registry. */
function mixFor(repo: string, digest: string, manifestSize: number, m: Manifest): LoadRequest[] {
  const manifest = (ref: string) => `/v2/${repo}/manifests/${ref}`;
  const blob = (d: string) => `/v2/${repo}/blobs/${d}`;
  const biggest = [...m.layers].sort((a, b) => b.size - a.size)[0]!;
  const headers = { accept: ACCEPT };
  return [
    { kind: 'manifest by tag', weight: 35, path: manifest('latest'), headers, size: manifestSize },
    { kind: 'manifest by digest', weight: 15, path: manifest(digest), headers, size: manifestSize },
    { kind: 'config blob', weight: 10, path: blob(m.config.digest), size: m.config.size },
    ...m.layers.map((l) => ({
      kind: l === biggest ? 'biggest layer' : 'other layers',
      weight: l === biggest ? 5 : 10 / (m.layers.length - 1),
      path: blob(l.digest),
      size: l.size,
    })),
    {
      kind: `${RANGE_KIB} KiB range`,
      weight: 25,
      path: blob(biggest.digest),
      size: biggest.size,
      rangeBytes: RANGE_KIB * 1024,
    },
  ];
}

async function load(origin: string, requests: LoadRequest[], seconds: number): Promise<LoadResult> {
  const plan: LoadPlan = { origin, connections: CONNECTIONS, durationMs: seconds * 1000, seed: 42, requests };
  const out = await runCommand(
    process.execPath,
    ['--disable-warning=ExperimentalWarning', LOAD_GEN, JSON.stringify(plan)],
    { timeoutMs: (seconds + 120) * 1000 },
  );
  return JSON.parse(out) as LoadResult;
}

/** A measured run: the load, and the server's CPU seconds during it. */
async function measured(pid: number, origin: string, requests: LoadRequest[]) {
  const cpu0 = await cpuSeconds(pid);
  const result = await load(origin, requests, DURATION);
  return { result, cpu: (await cpuSeconds(pid)) - cpu0 };
}

const ms = (x: number) => x.toFixed(1);

const cleanup = new Cleanup();
try {
  const reg = await startRegistry();
  cleanup.add(() => reg.stop());
  const work = await tempDir('bench-facade-load');
  cleanup.addDir(work);

  console.log(`pushing busybox and an IDE image (${LAYER_MIB} MiB and 256 KiB layers) to ${reg.host} …`);
  const busybox = await pushBusybox(reg, 'bench/busybox');
  const ide = await pushFilesImage(reg, 'bench/ide', {
    layers: [{ 'ide/bin/big.bin': LAYER_MIB * 2 ** 20 }, { 'ide/bin/small.bin': 256 * 1024 }],
    env: ['GITPOD_ENV_APPEND_PATH=/ide/bin:'],
  });
  const facade = await startFixedSpecFacade(work, reg.host, { baseRef: busybox.ref, ideRef: ide.ref });
  cleanup.add(() => facade.stop());

  const rssStart = await statusField(facade.pid, 'VmRSS');
  // The composite copied into docker-registry as a plain image; this also puts every layer into the
  // facade's cache, so the facade side is warm.
  const digest = await skopeoCopy(`${facade.host}/fixed/bench:latest`, `${reg.host}/bench/plain:latest`);
  const res = await fetch(`${facade.url}/v2/fixed/bench/manifests/${digest}`, {
    headers: { accept: ACCEPT },
  });
  if (res.status !== 200) throw new Error(`composite manifest: HTTP ${res.status}`);
  const bytes = Buffer.from(await res.arrayBuffer());
  const manifest = JSON.parse(bytes.toString('utf8')) as Manifest;
  const sides = [
    {
      name: 'facade',
      pid: facade.pid,
      origin: facade.url,
      mix: mixFor('fixed/bench', digest, bytes.length, manifest),
    },
    {
      name: 'docker-registry',
      pid: reg.pid,
      origin: reg.url,
      mix: mixFor('bench/plain', digest, bytes.length, manifest),
    },
  ];
  console.log(
    `image ${digest}: ${manifest.layers.length} layers, ${mib(manifest.layers.reduce((n, l) => n + l.size, 0))} MiB`,
  );
  for (const s of sides) {
    const w = await load(s.origin, s.mix, WARMUP);
    console.log(`warm-up ${s.name}: ${w.requests} requests, ${w.errors} errors`);
  }
  const rssWarm = await statusField(facade.pid, 'VmRSS');
  console.log(`facade RSS: ${mib(rssStart)} MiB at start, ${mib(rssWarm)} MiB after the copy and warm-up`);
  const reg1 = await measured(reg.pid, sides[1]!.origin, sides[1]!.mix);
  console.log(`docker-registry: ${(reg1.result.requests / reg1.result.seconds).toFixed(0)} req/s`);
  const { result: fac1, peak } = await peakRss(facade.pid, () =>
    measured(facade.pid, sides[0]!.origin, sides[0]!.mix),
  );
  console.log(`facade: ${(fac1.result.requests / fac1.result.seconds).toFixed(0)} req/s`);

  const runs = [
    ['facade (composite)', fac1],
    ['docker-registry (plain)', reg1],
  ] as const;
  const rate = (r: LoadResult) => r.requests / r.seconds;
  const weights = new Map<string, number>();
  for (const r of sides[0]!.mix) weights.set(r.kind, (weights.get(r.kind) ?? 0) + r.weight);
  const mixText = [...weights].map(([kind, w]) => `${kind} ${w.toFixed(0)}%`).join(', ');
  console.log(`\n${CONNECTIONS} connections × ${DURATION} s, mix: ${mixText}`);
  printTable([
    ['server', 'req/s', 'p50 ms', 'p99 ms', 'max ms', 'errors', 'MiB/s', 'server CPU s', 'generator CPU s'],
    ...runs.map(([name, { result: r, cpu }]) => [
      name,
      rate(r).toFixed(0),
      ms(r.p50),
      ms(r.p99),
      ms(r.max),
      String(r.errors),
      (r.bytes / 2 ** 20 / r.seconds).toFixed(0),
      cpu.toFixed(1),
      r.cpuSeconds.toFixed(1),
    ]),
  ]);
  console.log('\nper kind, p50 / p99 ms (count)');
  printTable([
    ['kind', ...runs.map(([name]) => name)],
    ...Object.keys(fac1.result.byKind).map((kind) => [
      kind,
      ...runs.map(([, { result: r }]) => {
        const k = r.byKind[kind]!;
        return `${ms(k.p50)} / ${ms(k.p99)} (${k.count})`;
      }),
    ]),
  ]);
  for (const [name, { result: r }] of runs) {
    if (r.errors > 0) console.log(`${name} errors: ${JSON.stringify(r.errorSamples)}`);
  }
  console.log(
    `\nratio facade/docker-registry req/s: ${(rate(fac1.result) / rate(reg1.result)).toFixed(2)}  (target ≥ 1.0)`,
  );
  console.log(
    `ratio facade/docker-registry p99:   ${(fac1.result.p99 / reg1.result.p99).toFixed(2)}  (target ≤ 1.0)`,
  );
  console.log(`errors: facade ${fac1.result.errors}, docker-registry ${reg1.result.errors}  (target 0)`);
  console.log(
    `facade peak RSS: ${mib(peak)} MiB  (target ≤ 300; ${mib(rssStart)} MiB at start, ${mib(rssWarm)} MiB before the runs)`,
  );
} finally {
  await cleanup.run();
}
