// Time to a running workspace, side by side in one run: `strata spec put` of a spec (busybox base, an IDE
// image with a LAYER_MIB layer, a supervisor and an IDE-layer image) → `ctr images pull` of its composite
// from the facade → `ctr run` of it prints its first line; with the facade's prefetch off and on (a fresh
// facade with an empty cache each time, so every blob comes from the registry at least once), against
// `ctr images pull` + `ctr run` of the same image (same manifest, config and layers) stored as a plain
// image in docker-registry. A fresh containerd for every run; starting facades and containerds is not
// timed. Median of ROUNDS, sides interleaved, each run split into its phases (put, pull, run).
// Target: the facade with prefetch ≤ 1.0× the plain image.
// Two prefetch sides: the definition (the pull follows the put at once, so the prefetch can only
// overlap the pull), and one where the pull starts once the prefetch has completed (as on a node where
// scheduling the workspace takes a few seconds after the spec is put); there the wait is not timed.
//
//   node bench/facade-start.ts   (ROUNDS=3 LAYER_MIB=32)

import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { startContainerd } from '../test/helpers/containerd.ts';
import { pushBusybox, pushFilesImage, skopeoCopy } from '../test/helpers/images.ts';
import { runCommand } from '../test/helpers/process.ts';
import { startRegistry } from '../test/helpers/registry.ts';
import { Cleanup, removeTempDir, tempDir } from '../test/helpers/tmp.ts';
import { startFacadeProcess } from './facade-server.ts';
import { intArg, median, printTable, timed } from './stats.ts';

const ROUNDS = intArg('ROUNDS', 3);
const LAYER_MIB = intArg('LAYER_MIB', 32);
const STRATA = new URL('../bin/strata', import.meta.url).pathname;

type Side =
  | 'facade, no prefetch'
  | 'facade, prefetch'
  | 'facade, pull after prefetch'
  | 'docker-registry (plain)';
const SIDES: Side[] = [
  'facade, no prefetch',
  'facade, prefetch',
  'facade, pull after prefetch',
  'docker-registry (plain)',
];

interface Timing {
  total: number;
  /** The `strata spec put` part (0 for the plain image). */
  put: number;
  pull: number;
  run: number;
}

/** Waits until the facade's metrics count a completed prefetch. */
async function prefetchCompleted(facadeUrl: string): Promise<void> {
  const deadline = Date.now() + 120_000;
  for (;;) {
    const text = await (await fetch(`${facadeUrl}/metrics`)).text();
    if (/^strata_facade_prefetches_finished_total\{result="completed"\} [1-9]/m.test(text)) return;
    if (/^strata_facade_prefetches_finished_total\{result="failed"\} [1-9]/m.test(text)) {
      throw new Error('the prefetch failed');
    }
    if (Date.now() > deadline) throw new Error('the prefetch did not complete within 120 s');
    await new Promise((r) => setTimeout(r, 20));
  }
}

const cleanup = new Cleanup();
try {
  const reg = await startRegistry();
  cleanup.add(() => reg.stop());
  const work = await tempDir('bench-facade-start');
  cleanup.addDir(work);
  console.log(`pushing busybox, an IDE image with a ${LAYER_MIB} MiB layer, a supervisor and an IDE layer …`);
  const busybox = await pushBusybox(reg, 'base');
  const ide = await pushFilesImage(reg, 'ide', {
    layers: [{ 'ide/bin/ide.bin': LAYER_MIB * 2 ** 20 }],
    env: ['GITPOD_ENV_APPEND_PATH=/ide/bin:'],
  });
  const supervisor = await pushFilesImage(reg, 'supervisor', {
    layers: [{ '.supervisor/supervisor.bin': 4 * 2 ** 20 }],
  });
  const ideLayer = await pushFilesImage(reg, 'ide-layer', { layers: [{ 'ide-layer/x.bin': 2 ** 20 }] });
  const specFile = join(work, 'spec.json');
  await writeFile(
    specFile,
    JSON.stringify({
      baseRef: busybox.ref,
      ideRef: ide.ref,
      supervisorRef: supervisor.ref,
      ideLayerRef: [ideLayer.ref],
    }),
  );

  /** A facade over a fresh spec store and an empty cache. */
  const freshFacade = async (dir: string, prefetch: boolean) => {
    const specDir = join(dir, 'specs');
    const facade = await startFacadeProcess({
      dir,
      specProviders: `{ store: { dir: "${specDir}" } }`,
      plainHttpHosts: [reg.host],
      extra: [`prefetch: { enabled: ${prefetch} }`],
    });
    return { facade, specDir };
  };

  // The plain image: the composite copied into docker-registry.
  const setupDir = join(work, 'setup');
  const setup = await freshFacade(setupDir, false);
  await runCommand(STRATA, ['spec', 'put', 'ws', specFile, '--spec-store', setup.specDir]);
  const plain = `${reg.host}/plain:latest`;
  await skopeoCopy(`${setup.facade.host}/remote/ws:latest`, plain);
  await setup.facade.stop();
  await removeTempDir(setupDir);

  /**
   * Pulls and runs `ref` in a fresh containerd; `put` runs first, inside the timing; `between` after it,
   * outside the timing.
   */
  const pullAndRun = async (
    ref: string,
    name: string,
    put: () => Promise<void>,
    between: () => Promise<void> = async () => {},
  ): Promise<Timing> => {
    const ctrd = await startContainerd();
    try {
      const putMs = await timed(put);
      await between();
      const pull = await timed(() =>
        ctrd.ctr(['images', 'pull', '--plain-http', ref], { timeoutMs: 600_000 }),
      );
      const run = await timed(async () => {
        const out = await ctrd.ctr(['run', '--rm', ref, name, 'sh', '-c', 'echo ready'], {
          timeoutMs: 120_000,
        });
        if (out.split('\n')[0] !== 'ready') throw new Error(`${name}: printed ${JSON.stringify(out)}`);
      });
      return { total: putMs + pull + run, put: putMs, pull, run };
    } finally {
      await ctrd.stop();
    }
  };

  const run = async (side: Side, round: number): Promise<Timing> => {
    const name = `ws${round}`;
    if (side === 'docker-registry (plain)') return pullAndRun(plain, name, async () => {});
    const prefetch = side !== 'facade, no prefetch';
    const dir = join(work, `${SIDES.indexOf(side)}-${round}`);
    const { facade, specDir } = await freshFacade(dir, prefetch);
    try {
      return await pullAndRun(
        `${facade.host}/remote/${name}:latest`,
        name,
        async () => {
          await runCommand(STRATA, ['spec', 'put', name, specFile, '--spec-store', specDir]);
        },
        side === 'facade, pull after prefetch' ? () => prefetchCompleted(facade.url) : undefined,
      );
    } finally {
      await facade.stop();
      await removeTempDir(dir);
    }
  };

  const results = new Map<Side, Timing[]>(SIDES.map((s) => [s, []]));
  // One untimed run of each side first (page cache, binaries).
  for (const side of SIDES) await run(side, 0);
  for (let round = 1; round <= ROUNDS; round++) {
    // Rotate who goes first.
    for (let i = 0; i < SIDES.length; i++) {
      const side = SIDES[(round + i) % SIDES.length]!;
      const t = await run(side, round);
      results.get(side)!.push(t);
      console.log(
        `round ${round} ${side}: ${t.total.toFixed(0)} ms (put ${t.put.toFixed(0)}, pull ${t.pull.toFixed(0)}, run ${t.run.toFixed(0)})`,
      );
    }
  }
  const med = (side: Side) => median(results.get(side)!.map((t) => t.total));
  console.log(
    `\nspec put → ctr pull → ctr run prints its first line (${((ide.blobBytes + busybox.blobBytes + supervisor.blobBytes + ideLayer.blobBytes) / 2 ** 20) | 0} MiB of blobs), median of ${ROUNDS}`,
  );
  printTable([
    ['side', 'median ms', 'put', 'pull', 'run', 'rounds'],
    ...SIDES.map((side) => {
      const ts = results.get(side)!;
      return [
        side,
        med(side).toFixed(0),
        median(ts.map((t) => t.put)).toFixed(0),
        median(ts.map((t) => t.pull)).toFixed(0),
        median(ts.map((t) => t.run)).toFixed(0),
        ts.map((t) => t.total.toFixed(0)).join(' '),
      ];
    }),
  ]);
  const plainMs = med('docker-registry (plain)');
  console.log(
    `ratio facade with prefetch / plain:    ${(med('facade, prefetch') / plainMs).toFixed(2)}  (target ≤ 1.0)`,
  );
  console.log(
    `ratio facade, pull after prefetch / plain: ${(med('facade, pull after prefetch') / plainMs).toFixed(2)}  (put + pull + run; the wait for the prefetch not counted)`,
  );
  console.log(`ratio facade without prefetch / plain: ${(med('facade, no prefetch') / plainMs).toFixed(2)}`);
  // What the node itself waits for once the spec was put and prefetched: its pull and run alone.
  const pullRun = (side: Side) => median(results.get(side)!.map((t) => t.pull + t.run));
  console.log(
    `ratio pull + run alone, pull after prefetch / plain: ${(pullRun('facade, pull after prefetch') / pullRun('docker-registry (plain)')).toFixed(2)}`,
  );
} finally {
  await cleanup.run();
}
