// Time to a running workspace, side by side in one run: `strata spec put` of a spec (busybox base, an IDE
// image with a LAYER_MIB layer, a supervisor and an IDE-layer image) → `ctr images pull` of its composite
// from the facade → `ctr run` of it prints its first line, with the facade's prefetch off and on, against
// `ctr images pull` + `ctr run` of the same image (same manifest, config and layers) stored as a plain
// image in docker-registry. Target: the facade with prefetch ≤ 1.0× the plain image.
//
// Every round pushes new IDE, supervisor and IDE-layer images (fresh random bytes), so no facade has any
// of their blobs cached: each comes from the registry at least once. The facades are long-running
// processes, as on a node (and as the docker-registry side is); one more side starts a facade for each
// run, the worst case of a node whose facade just started. A fresh containerd for every run; starting
// processes and making images are not timed. Median of ROUNDS, sides interleaved, each run split into its
// phases (put, pull, run). Each run starts once the disk has taken what the runs before it wrote (sync, not
// timed): otherwise the kernel's writeback of earlier runs lands in later ones, and rounds drift slower.
// Ratios are the median of each round's ratio (sides of one round against each other), which the
// machine's drift over a long run does not move; the medians of the totals are printed beside them.
// Two prefetch sides: the definition (the pull follows the put at once, so the prefetch can only
// overlap the pull), and one where the pull starts once the prefetch has completed (as on a node where
// scheduling the workspace takes a few seconds after the spec is put); there the wait is not timed.
// One more prefetch side puts the spec over the store's gRPC API (strata.specstore.v1.SpecStore) from a
// client that stays connected, as a platform would, instead of starting `strata spec put`: the same path
// without the process start the plain image does not have.
// A second table gives the CPU time each side used over its timed parts: the whole machine's (every
// process and the kernel), how many cores that kept busy on average, and the facade's and docker-registry's
// own, to tell work added from work waited for.
//
//   node bench/facade-start.ts   (ROUNDS=3 LAYER_MIB=32)

import { once } from 'node:events';
import { readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { GrpcSpecStore } from '../src/api/clients/spec-store.ts';
import { specFromJson } from '../src/api/convert/image-spec-json.ts';
import { startContainerd, type TestContainerd } from '../test/helpers/containerd.ts';
import { pushBusybox, pushFilesImage, skopeoCopy } from '../test/helpers/images.ts';
import { freePort } from '../test/helpers/ports.ts';
import { runCommand } from '../test/helpers/process.ts';
import { startRegistry } from '../test/helpers/registry.ts';
import { Cleanup, removeTempDir, tempDir } from '../test/helpers/tmp.ts';
import { type FacadeProcess, startFacadeProcess } from './facade-server.ts';
import { cpuSecondsNow, machineCpuSecondsNow } from './proc.ts';
import { intArg, median, printTable, timed } from './stats.ts';

const ROUNDS = intArg('ROUNDS', 3);
const LAYER_MIB = intArg('LAYER_MIB', 32);
const STRATA = new URL('../bin/strata', import.meta.url).pathname;

type Side =
  | 'facade, no prefetch'
  | 'facade, prefetch'
  | 'facade, prefetch, put over gRPC'
  | 'facade, pull after prefetch'
  | 'facade just started, prefetch'
  | 'docker-registry (plain)';
const SIDES: Side[] = [
  'facade, no prefetch',
  'facade, prefetch',
  'facade, prefetch, put over gRPC',
  'facade, pull after prefetch',
  'facade just started, prefetch',
  'docker-registry (plain)',
];

interface Timing {
  total: number;
  /** The `strata spec put` part (0 for the plain image). */
  put: number;
  pull: number;
  /** `ctr run` until the container printed its first line. */
  run: number;
  /** CPU seconds over the timed parts. */
  cpu: Cpu;
  /** The machine's CPU seconds during the pull alone. */
  pullCpu: number;
}

interface Cpu {
  /** The whole machine's: every process and the kernel, all cores added up. */
  machine: number;
  /** The facade process's (0 for the plain image). */
  facade: number;
  registry: number;
}

/** A facade over its own spec store; `store` when it serves the store over gRPC with writes. */
interface SpecFacade {
  facade: FacadeProcess;
  specDir: string;
  store?: GrpcSpecStore;
}

/** The facade's count of completed prefetches; a failed one throws. */
async function prefetchesCompleted(facadeUrl: string): Promise<number> {
  const text = await (await fetch(`${facadeUrl}/metrics`)).text();
  if (/^strata_facade_prefetches_finished_total\{result="failed"\} [1-9]/m.test(text)) {
    throw new Error('a prefetch failed');
  }
  const m = /^strata_facade_prefetches_finished_total\{result="completed"\} (\d+)/m.exec(text);
  return m ? Number(m[1]) : 0;
}

/** Waits until the facade counts more than `before` completed prefetches. */
async function prefetchCompleted(facadeUrl: string, before: number): Promise<void> {
  const deadline = Date.now() + 120_000;
  while ((await prefetchesCompleted(facadeUrl)) <= before) {
    if (Date.now() > deadline) throw new Error('the prefetch did not complete within 120 s');
    await new Promise((r) => setTimeout(r, 20));
  }
}

/**
 * Runs `ctr ARGS` and returns the milliseconds until it printed its first line, which must be `want`;
 * the rest of the run (the container's removal) is awaited but not timed. `atLine` is called right then.
 */
async function firstLine(
  ctrd: TestContainerd,
  args: string[],
  want: string,
  atLine: () => void,
): Promise<number> {
  const start = process.hrtime.bigint();
  const child = ctrd.spawnCtr(args);
  const kill = setTimeout(() => child.kill('SIGKILL'), 120_000);
  try {
    let out = '';
    let ms: number | undefined;
    let err = '';
    child.stdout.setEncoding('utf8').on('data', (chunk: string) => {
      out += chunk;
      if (ms === undefined && out.includes('\n')) {
        ms = Number(process.hrtime.bigint() - start) / 1e6;
        atLine();
      }
    });
    child.stderr.setEncoding('utf8').on('data', (chunk: string) => {
      err += chunk;
    });
    const [code] = (await once(child, 'close')) as [number | null];
    if (code !== 0 || ms === undefined || out.split('\n')[0] !== want) {
      throw new Error(`ctr ${args.join(' ')}: exit ${code}, printed ${JSON.stringify(out)} ${err}`);
    }
    return ms;
  } finally {
    clearTimeout(kill);
  }
}

const cleanup = new Cleanup();
try {
  const reg = await startRegistry();
  cleanup.add(() => reg.stop());
  const work = await tempDir('bench-facade-start');
  cleanup.addDir(work);
  const busybox = await pushBusybox(reg, 'base');
  const cpuNow = (facadePid: number | undefined): Cpu => ({
    machine: machineCpuSecondsNow(),
    facade: facadePid === undefined ? 0 : cpuSecondsNow(facadePid),
    registry: cpuSecondsNow(reg.pid),
  });

  /** A facade over a new spec store and an empty cache in `dir` (the store served over gRPC: `grpc`). */
  const startSpecFacade = async (dir: string, prefetch: boolean, grpc = false): Promise<SpecFacade> => {
    const specDir = join(dir, 'specs');
    const address = grpc ? `127.0.0.1:${await freePort()}` : undefined;
    const served = address ? `, listen: "${address}", writable: true` : '';
    const facade = await startFacadeProcess({
      dir,
      specProviders: `{ store: { dir: "${specDir}"${served} } }`,
      plainHttpHosts: [reg.host],
      extra: [`prefetch: { enabled: ${prefetch} }`],
    });
    const store = address ? new GrpcSpecStore(address) : undefined;
    if (store) await store.list(); // connected before the first timed put
    return { facade, specDir, store };
  };
  const put = async (f: SpecFacade, id: string, specFile: string) => {
    if (f.store) await f.store.put(id, specFromJson(JSON.parse(await readFile(specFile, 'utf8')), specFile));
    else await runCommand(STRATA, ['spec', 'put', id, specFile, '--spec-store', f.specDir]);
  };

  // One long-running facade per facade side, and one that only makes the plain copies (so the timed
  // facades see every round's blobs for the first time).
  const running = new Map<Side, SpecFacade>();
  for (const side of [
    'facade, no prefetch',
    'facade, prefetch',
    'facade, prefetch, put over gRPC',
    'facade, pull after prefetch',
  ] as const) {
    const f = await startSpecFacade(
      join(work, `facade-${SIDES.indexOf(side)}`),
      side !== 'facade, no prefetch',
      side === 'facade, prefetch, put over gRPC',
    );
    cleanup.add(async () => {
      f.store?.close();
      await f.facade.stop();
    });
    running.set(side, f);
  }
  const copier = await startSpecFacade(join(work, 'copier'), false);
  cleanup.add(() => copier.facade.stop());

  /** New IDE, supervisor and IDE-layer images, the spec naming them, and its plain copy. */
  const newImage = async (round: number) => {
    const ide = await pushFilesImage(reg, `ide-${round}`, {
      layers: [{ 'ide/bin/ide.bin': LAYER_MIB * 2 ** 20 }],
      env: ['GITPOD_ENV_APPEND_PATH=/ide/bin:'],
    });
    const supervisor = await pushFilesImage(reg, `supervisor-${round}`, {
      layers: [{ '.supervisor/supervisor.bin': 4 * 2 ** 20 }],
    });
    const ideLayer = await pushFilesImage(reg, `ide-layer-${round}`, {
      layers: [{ 'ide-layer/x.bin': 2 ** 20 }],
    });
    const specFile = join(work, `spec-${round}.json`);
    const spec = {
      baseRef: busybox.ref,
      ideRef: ide.ref,
      supervisorRef: supervisor.ref,
      ideLayerRef: [ideLayer.ref],
    };
    await writeFile(specFile, JSON.stringify(spec));
    const id = `ws${round}`;
    await put(copier, id, specFile);
    const plain = `${reg.host}/plain-${round}:latest`;
    await skopeoCopy(`${copier.facade.host}/remote/${id}:latest`, plain);
    // The new images' writes reach the disk now, not during the timed runs.
    await runCommand('sync', []);
    const mib = (ide.blobBytes + busybox.blobBytes + supervisor.blobBytes + ideLayer.blobBytes) / 2 ** 20;
    return { id, specFile, plain, mib };
  };

  /**
   * Pulls and runs `ref` in a fresh containerd; `put` runs first, inside the timing; `between` after it,
   * outside the timing. CPU is counted for the facade `facadePid` (none for the plain image).
   */
  const pullAndRun = async (
    ref: string,
    name: string,
    facadePid: number | undefined,
    putSpec: () => Promise<void>,
    between: () => Promise<void> = async () => {},
  ): Promise<Timing> => {
    const ctrd = await startContainerd();
    try {
      await runCommand('sync', []);
      const atStart = cpuNow(facadePid);
      const putMs = await timed(putSpec);
      const afterPut = cpuNow(facadePid);
      await between();
      const beforePull = cpuNow(facadePid);
      const pull = await timed(() =>
        ctrd.ctr(['images', 'pull', '--plain-http', ref], { timeoutMs: 600_000 }),
      );
      const pullCpu = machineCpuSecondsNow() - beforePull.machine;
      // The pause after the line (not timed): ctr 1.6 may drop what a container prints right before it
      // exits (see TestContainerd.run), which would end a long run with an error.
      let atLine = beforePull;
      const run = await firstLine(
        ctrd,
        ['run', '--rm', ref, name, 'sh', '-c', 'echo ready; sleep 0.2'],
        'ready',
        () => {
          atLine = cpuNow(facadePid);
        },
      );
      const spent = (k: keyof Cpu) => afterPut[k] - atStart[k] + (atLine[k] - beforePull[k]);
      const cpu = { machine: spent('machine'), facade: spent('facade'), registry: spent('registry') };
      return { total: putMs + pull + run, put: putMs, pull, run, cpu, pullCpu };
    } finally {
      await ctrd.stop();
    }
  };

  const run = async (side: Side, image: Awaited<ReturnType<typeof newImage>>): Promise<Timing> => {
    if (side === 'docker-registry (plain)')
      return pullAndRun(image.plain, image.id, undefined, async () => {});
    const ws = (f: SpecFacade, between?: () => Promise<void>) =>
      pullAndRun(
        `${f.facade.host}/remote/${image.id}:latest`,
        image.id,
        f.facade.pid,
        () => put(f, image.id, image.specFile),
        between,
      );
    const f = running.get(side);
    if (f === undefined) {
      const dir = join(work, `started-${image.id}`);
      const started = await startSpecFacade(dir, true);
      try {
        return await ws(started);
      } finally {
        await started.facade.stop();
        await removeTempDir(dir);
      }
    }
    if (side !== 'facade, pull after prefetch') return ws(f);
    const before = await prefetchesCompleted(f.facade.url);
    return ws(f, () => prefetchCompleted(f.facade.url, before));
  };

  const results = new Map<Side, Timing[]>(SIDES.map((s) => [s, []]));
  let mib = 0;
  for (let round = 0; round <= ROUNDS; round++) {
    const image = await newImage(round);
    mib = image.mib;
    // Round 0 is not counted (page cache, binaries, the facades' first requests). Rotate who goes first.
    for (let i = 0; i < SIDES.length; i++) {
      const side = SIDES[(round + i) % SIDES.length]!;
      const t = await run(side, image);
      if (round === 0) continue;
      results.get(side)!.push(t);
      console.log(
        `round ${round} ${side}: ${t.total.toFixed(0)} ms (put ${t.put.toFixed(0)}, pull ${t.pull.toFixed(0)}, run ${t.run.toFixed(0)})`,
      );
    }
  }
  const med = (side: Side) => median(results.get(side)!.map((t) => t.total));
  /** A figure of a side's rounds: their median, with `digits` decimals. */
  const medOf = (ts: Timing[], pick: (t: Timing) => number, digits: number) =>
    median(ts.map(pick)).toFixed(digits);
  console.log(
    `\nspec put → ctr pull → ctr run prints its first line (${mib | 0} MiB of blobs, new each round), median of ${ROUNDS}`,
  );
  printTable([
    ['side', 'median ms', 'put', 'pull', 'run', 'rounds'],
    ...SIDES.map((side) => {
      const ts = results.get(side)!;
      return [
        side,
        med(side).toFixed(0),
        medOf(ts, (t) => t.put, 0),
        medOf(ts, (t) => t.pull, 0),
        medOf(ts, (t) => t.run, 0),
        ts.map((t) => t.total.toFixed(0)).join(' '),
      ];
    }),
  ]);
  console.log(
    '\nCPU over the timed parts, medians: seconds, and cores kept busy on average (machine / wall)',
  );
  printTable([
    ['side', 'machine s', 'cores busy', 'in the pull', 'facade s', 'docker-registry s'],
    ...SIDES.map((side) => {
      const ts = results.get(side)!;
      return [
        side,
        medOf(ts, (t) => t.cpu.machine, 2),
        medOf(ts, (t) => t.cpu.machine / (t.total / 1000), 2),
        medOf(ts, (t) => t.pullCpu / (t.pull / 1000), 2),
        medOf(ts, (t) => t.cpu.facade, 2),
        medOf(ts, (t) => t.cpu.registry, 2),
      ];
    }),
  ]);
  /** The median over rounds of `pick(side)` / `pick(plain)` within each round. */
  const paired = (side: Side, pick: (t: Timing) => number = (t) => t.total) => {
    const plain = results.get('docker-registry (plain)')!;
    return median(results.get(side)!.map((t, i) => pick(t) / pick(plain[i]!))).toFixed(2);
  };
  const ratio = (side: Side) =>
    `${paired(side)}  (of the medians: ${(med(side) / med('docker-registry (plain)')).toFixed(2)})`;
  console.log("\nratios to the plain image: median of the rounds' own ratios");
  console.log(`facade with prefetch / plain:    ${ratio('facade, prefetch')}  target ≤ 1.0`);
  console.log(
    `facade with prefetch, put over gRPC / plain: ${ratio('facade, prefetch, put over gRPC')}  no process start in the put`,
  );
  console.log(
    `facade, pull after prefetch / plain: ${ratio('facade, pull after prefetch')}  put + pull + run; the wait for the prefetch not counted`,
  );
  console.log(`facade without prefetch / plain: ${ratio('facade, no prefetch')}`);
  console.log(`facade just started, with prefetch / plain: ${ratio('facade just started, prefetch')}`);
  // The pull and run alone, without the put: what the prefetch overlapping the pull costs (pull right after
  // the put), and what the node waits for once the spec was put and prefetched (pull after prefetch).
  for (const side of ['facade, prefetch', 'facade, pull after prefetch'] as const) {
    console.log(`pull + run alone, ${side} / plain: ${paired(side, (t) => t.pull + t.run)}`);
  }
} finally {
  await cleanup.run();
}
