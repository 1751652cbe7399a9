// `strata pull` into `strata daemon` versus `ctr images pull --plain-http` into a real containerd 1.6
// (private instance, CRI off), each with the same snapshotter, for both snapshotters (overlayfs, the
// default, and native) and two images from a local docker-registry: a ≥5-layer, ≥200 MiB one of big
// files, and one of many small files (~20,000 over 5 layers), where per-file cost shows. A fresh daemon
// root for every run, interleaved rounds in one process. Prints the median wall time of each side, the
// ratio Strata/containerd (target ≤ 1.0) per image and snapshotter, and each root's snapshot disk use
// after the pull.
//
//   node bench/pull-unpack.ts   (ROUNDS=5 LAYERS=5 LAYER_MIB=45 FILES=20000 CONCURRENCY=3
//                                SNAPSHOTTERS=overlayfs,native IMAGES=big,small-files)
import { join } from 'node:path';
import { diskUsage } from '../src/snapshots/disk-usage.ts';
import { startContainerd } from '../test/helpers/containerd.ts';
import { startDaemon } from '../test/helpers/daemon.ts';
import { type FileContent, pushFilesImage, pushMultiLayer } from '../test/helpers/images.ts';
import { runCommand } from '../test/helpers/process.ts';
import { startRegistry } from '../test/helpers/registry.ts';
import { Cleanup, removeTempDir, tempDir } from '../test/helpers/tmp.ts';
import { intArg, median, printTable, timed } from './stats.ts';

const BIN = new URL('../bin/strata', import.meta.url).pathname;
const rounds = intArg('ROUNDS', 5);
const layers = intArg('LAYERS', 5);
const layerMiB = intArg('LAYER_MIB', 45);
const files = intArg('FILES', 20_000);
const concurrency = intArg('CONCURRENCY', 3);
const snapshotters = (process.env.SNAPSHOTTERS ?? 'overlayfs,native').split(',');
const only = (process.env.IMAGES ?? 'big,small-files').split(',');

interface Round {
  ms: number;
  /** Bytes the snapshotter's directory takes after the pull. */
  disk: number;
}

/** One pull into a fresh strata daemon; the daemon's start and stop are not timed. */
async function strataRound(ref: string, sn: string): Promise<Round> {
  const root = await tempDir('bench-strata');
  const daemon = await startDaemon({ root, logLevel: 'warn' });
  try {
    const args = ['pull', '--progress', 'none', '--concurrency', String(concurrency), '--snapshotter', sn];
    const ms = await timed(() =>
      runCommand(BIN, [...args, '--address', daemon.address, ref], { timeoutMs: 600_000 }),
    );
    return { ms, disk: (await diskUsage(join(root, 'snapshots', sn))).size };
  } finally {
    await daemon.stop();
    await removeTempDir(root);
  }
}

/** One pull into a fresh containerd; its start and stop are not timed. */
async function containerdRound(ref: string, sn: string): Promise<Round> {
  const containerd = await startContainerd();
  try {
    const ms = await timed(() =>
      containerd.ctr(['images', 'pull', '--plain-http', '--snapshotter', sn, ref], { timeoutMs: 600_000 }),
    );
    const dir = join(containerd.root, 'root', `io.containerd.snapshotter.v1.${sn}`);
    return { ms, disk: (await diskUsage(dir)).size };
  } finally {
    await containerd.stop();
  }
}

/** `count` small files (0.5-4 KiB of random bytes) in directories of 50, over `layerCount` layers. */
function smallFileLayers(count: number, layerCount: number): Array<Record<string, FileContent>> {
  const out: Array<Record<string, FileContent>> = [];
  for (let l = 0; l < layerCount; l++) {
    const layer: Record<string, FileContent> = {};
    for (let i = l; i < count; i += layerCount) {
      layer[`usr/share/many/l${l}/d${Math.floor(i / 50)}/f${i}`] = 512 + ((i * 7919) % 3585);
    }
    out.push(layer);
  }
  return out;
}

const mib = (bytes: number) => (bytes / 2 ** 20).toFixed(1);

const cleanup = new Cleanup();
try {
  const reg = await startRegistry();
  cleanup.add(() => reg.stop());
  const images = [];
  if (only.includes('big')) {
    console.log(`pushing a ${layers}-layer image of ${layers * layerMiB} MiB (+ busybox) to ${reg.host} …`);
    const image = await pushMultiLayer(reg, 'bench/big', { layers, layerBytes: layerMiB << 20 });
    images.push({ name: `${layers}×${layerMiB} MiB`, image });
  }
  if (only.includes('small-files')) {
    console.log(`pushing an image of ${files} small files over 5 layers (+ busybox) …`);
    const image = await pushFilesImage(reg, 'bench/small-files', {
      busybox: true,
      layers: smallFileLayers(files, 5),
    });
    images.push({ name: `${files} small files`, image });
  }

  const rows = [
    ['image', 'snapshotter', 'strata ms', 'containerd ms', 'ratio', 'strata disk MiB', 'containerd disk MiB'],
  ];
  const ratios: string[] = [];
  for (const { name, image } of images) {
    console.log(`${image.ref}: ${image.layers} layers, ${mib(image.blobBytes)} MiB of blobs`);
    for (const sn of snapshotters) {
      // Sanity first: each side pulls and unpacks the image once, outside the timings.
      const disk = [(await strataRound(image.ref, sn)).disk, (await containerdRound(image.ref, sn)).disk];
      const strata: number[] = [];
      const ctr: number[] = [];
      for (let round = 1; round <= rounds; round++) {
        const runs: [string, () => Promise<Round>][] = [
          ['strata', () => strataRound(image.ref, sn)],
          ['containerd', () => containerdRound(image.ref, sn)],
        ];
        // Alternate who goes first so neither always gets the warmer page cache.
        if (round % 2 === 0) runs.reverse();
        for (const [side, run] of runs) {
          const { ms } = await run();
          (side === 'strata' ? strata : ctr).push(ms);
          console.log(`${name} ${sn} round ${round}: ${side} ${ms.toFixed(0)} ms`);
        }
      }
      const s = median(strata);
      const c = median(ctr);
      rows.push([name, sn, s.toFixed(0), c.toFixed(0), (s / c).toFixed(3), mib(disk[0]!), mib(disk[1]!)]);
      ratios.push(`${name}, ${sn}: ${(s / c).toFixed(3)}`);
    }
  }
  printTable(rows);
  console.log(`ratio strata/containerd (median time, target ≤ 1.0): ${ratios.join('; ')}`);
} finally {
  await cleanup.run();
}
