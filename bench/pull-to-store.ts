// Pull a ≥5-layer, ≥200 MiB image from a local docker-registry into Strata's content store with the real
// pull (`strata pull --no-unpack` into a fresh `strata daemon`), side by side with
// `skopeo copy docker://… oci:DIR` in the same run, several interleaved rounds, fresh targets each round.
// Prints the median wall time of each and the ratio Strata/skopeo (target ≤ 1.0).
//
//   node bench/pull-to-store.ts            (ROUNDS=5 LAYERS=5 LAYER_MIB=45 to change the shape)
import { join } from 'node:path';
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

/** One fetch-only pull into a fresh daemon; the daemon's start and stop are not timed. */
async function strataRound(ref: string): Promise<number> {
  const root = await tempDir('bench-store');
  const daemon = await startDaemon({ root, logLevel: 'warn' });
  try {
    return await timed(() =>
      runCommand(BIN, ['pull', '--no-unpack', '--progress', 'none', '--address', daemon.address, ref], {
        timeoutMs: 600_000,
      }),
    );
  } finally {
    await daemon.stop();
    await removeTempDir(root);
  }
}

const cleanup = new Cleanup();
try {
  const reg = await startRegistry();
  cleanup.add(() => reg.stop());
  const work = await tempDir('bench-pull');
  cleanup.addDir(work);

  console.log(`pushing a ${layers}-layer image of ${layers * layerMiB} MiB (+ busybox) to ${reg.host} …`);
  const image = await pushMultiLayer(reg, 'bench/big', { layers, layerBytes: layerMiB << 20 });

  const strata: number[] = [];
  const skopeo: number[] = [];
  for (let round = 1; round <= rounds; round++) {
    const ociDir = join(work, `oci-${round}`);
    // Alternate who goes first so neither always gets the warmer page cache.
    const runs: [string, () => Promise<number>][] = [
      ['strata', () => strataRound(image.ref)],
      [
        'skopeo',
        () =>
          timed(() =>
            runCommand(
              'skopeo',
              ['copy', '-q', '--src-tls-verify=false', `docker://${image.ref}`, `oci:${ociDir}`],
              { timeoutMs: 600_000 },
            ),
          ),
      ],
    ];
    if (round % 2 === 0) runs.reverse();
    for (const [name, run] of runs) {
      const ms = await run();
      (name === 'strata' ? strata : skopeo).push(ms);
      console.log(`round ${round}: ${name} ${ms.toFixed(0)} ms`);
    }
    await removeTempDir(ociDir);
  }

  const s = median(strata);
  const k = median(skopeo);
  const mib = image.blobBytes / 2 ** 20;
  printTable([
    ['tool', 'median ms', 'MiB/s'],
    ['strata', s.toFixed(0), (mib / (s / 1000)).toFixed(1)],
    ['skopeo copy', k.toFixed(0), (mib / (k / 1000)).toFixed(1)],
  ]);
  console.log(`ratio strata/skopeo (median time): ${(s / k).toFixed(3)}  (target ≤ 1.0)`);
} finally {
  await cleanup.run();
}
