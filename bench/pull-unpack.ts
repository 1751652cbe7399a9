// `strata pull` into `strata daemon` versus `ctr images pull --plain-http --snapshotter native` into a
// real containerd 1.6 (private instance, CRI off): the same ≥5-layer, ≥200 MiB image from a local
// docker-registry, a fresh daemon root for every run, interleaved rounds in one process. Prints the
// median wall time of each and the ratio Strata/containerd (target ≤ 1.0).
//
//   node bench/pull-unpack.ts            (ROUNDS=5 LAYERS=5 LAYER_MIB=45 CONCURRENCY=3 to change it)
import { startContainerd } from '../test/helpers/containerd.ts';
import { startDaemon } from '../test/helpers/daemon.ts';
import { pushMultiLayer } from '../test/helpers/images.ts';
import { runCommand } from '../test/helpers/process.ts';
import { startRegistry } from '../test/helpers/registry.ts';
import { Cleanup, removeTempDir, tempDir } from '../test/helpers/tmp.ts';
import { intArg, median, printTable, timed } from './stats.ts';

const BIN = new URL('../bin/strata', import.meta.url).pathname;
const rounds = intArg('ROUNDS', 5);
const layers = intArg('LAYERS', 5);
const layerMiB = intArg('LAYER_MIB', 45);
const concurrency = intArg('CONCURRENCY', 3);

/** One pull into a fresh strata daemon; the daemon's start and stop are not timed. */
async function strataRound(ref: string): Promise<number> {
  const root = await tempDir('bench-strata');
  const daemon = await startDaemon({ root, logLevel: 'warn' });
  try {
    return await timed(() =>
      runCommand(
        BIN,
        [
          'pull',
          '--progress',
          'none',
          '--concurrency',
          String(concurrency),
          '--address',
          daemon.address,
          ref,
        ],
        { timeoutMs: 600_000 },
      ),
    );
  } finally {
    await daemon.stop();
    await removeTempDir(root);
  }
}

/** One pull into a fresh containerd; its start and stop are not timed. */
async function containerdRound(ref: string): Promise<number> {
  const containerd = await startContainerd();
  try {
    return await timed(() =>
      containerd.ctr(['images', 'pull', '--plain-http', '--snapshotter', 'native', ref], {
        timeoutMs: 600_000,
      }),
    );
  } finally {
    await containerd.stop();
  }
}

const cleanup = new Cleanup();
try {
  const reg = await startRegistry();
  cleanup.add(() => reg.stop());
  console.log(`pushing a ${layers}-layer image of ${layers * layerMiB} MiB (+ busybox) to ${reg.host} …`);
  const image = await pushMultiLayer(reg, 'bench/big', { layers, layerBytes: layerMiB << 20 });
  const mib = image.blobBytes / 2 ** 20;
  console.log(`${image.ref}: ${image.layers} layers, ${mib.toFixed(1)} MiB of blobs`);

  // Sanity first: each side pulls and unpacks the image once, outside the timings.
  await strataRound(image.ref);
  await containerdRound(image.ref);

  const strata: number[] = [];
  const ctr: number[] = [];
  for (let round = 1; round <= rounds; round++) {
    const runs: [string, () => Promise<number>][] = [
      ['strata', () => strataRound(image.ref)],
      ['containerd', () => containerdRound(image.ref)],
    ];
    // Alternate who goes first so neither always gets the warmer page cache.
    if (round % 2 === 0) runs.reverse();
    for (const [name, run] of runs) {
      const ms = await run();
      (name === 'strata' ? strata : ctr).push(ms);
      console.log(`round ${round}: ${name} ${ms.toFixed(0)} ms`);
    }
  }

  const s = median(strata);
  const c = median(ctr);
  printTable([
    ['pull + unpack', 'median ms', 'MiB/s'],
    ['strata pull → strata daemon', s.toFixed(0), (mib / (s / 1000)).toFixed(1)],
    ['ctr images pull → containerd 1.6', c.toFixed(0), (mib / (c / 1000)).toFixed(1)],
  ]);
  console.log(`ratio strata/containerd (median time): ${(s / c).toFixed(3)}  (target ≤ 1.0)`);
} finally {
  await cleanup.run();
}
