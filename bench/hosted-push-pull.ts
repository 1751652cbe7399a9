// Pushes into and pulls out of Strata's hosted repositories (`strata facade` with `hosted: { root }`, run
// as bin/strata) side by side with docker-registry (filesystem storage in a temp dir), in one run:
// a busybox-static based image with LAYERS random (incompressible) layers of LAYER_MIB each, ~226 MiB of
// blobs by default.
//   - `buildah push` from buildah's own storage (which compresses the layers again on the way, as a user's
//     push does),
//   - `skopeo copy oci:DIR docker://…` (the blobs go over as they are),
//   - `skopeo copy docker://… oci:DIR` pulling the skopeo-pushed image back into a fresh layout.
// Every round starts fresh registries of each kind (not timed), on new ports, so nothing is already
// there and the tools' blob caches know no location on them (buildah, which knows the layers' compressed
// digests from its pull, would mount what skopeo pushed); who goes first alternates. Prints each
// time, the medians and the ratio Strata/docker-registry per operation (target ≤ 1.0).
//
// BASELINE=<another checkout> adds a third side, that checkout's bin/strata, in the same rounds (before /
// after figures of a change under the same load).
//
//   node bench/hosted-push-pull.ts      (ROUNDS=5 LAYERS=5 LAYER_MIB=45 BASELINE=)
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { spawnFacade } from '../test/helpers/facade.ts';
import { imageTools, pushMultiLayer } from '../test/helpers/images.ts';
import { freePort } from '../test/helpers/ports.ts';
import { startRegistry } from '../test/helpers/registry.ts';
import { Cleanup, removeTempDir, tempDir } from '../test/helpers/tmp.ts';
import { intArg, median, printTable, timed } from './stats.ts';

const STRATA = new URL('../bin/strata', import.meta.url).pathname;
const rounds = intArg('ROUNDS', 5);
const layers = intArg('LAYERS', 5);
const layerMiB = intArg('LAYER_MIB', 45);
const baseline = process.env.BASELINE || undefined;

type Side = 'strata' | 'docker-registry' | 'baseline';
const OPS = ['buildah push', 'skopeo push', 'skopeo pull'] as const;
type Op = (typeof OPS)[number];
/** Operations that share one fresh registry (the pull reads what the push before it wrote). */
const GROUPS: Op[][] = [['buildah push'], ['skopeo push', 'skopeo pull']];

interface Target {
  host: string;
  stop(): Promise<void>;
}

/** A fresh `strata facade` (of the checkout `bin`) serving hosted repositories on a fresh root. */
async function startStrata(bin = STRATA): Promise<Target> {
  const dir = await tempDir('bench-hosted');
  try {
    const host = `127.0.0.1:${await freePort()}`;
    const config = join(dir, 'facade.yaml');
    await writeFile(
      config,
      [
        `listen: "${host}"`,
        `hosted: { root: "${join(dir, 'root')}" }`,
        `cache: { dir: "${join(dir, 'cache')}" }`,
        '',
      ].join('\n'),
    );
    const server = await spawnFacade({
      config,
      url: `http://${host}`,
      logFile: join(dir, 'facade.log'),
      logLevel: 'warn',
      strata: bin,
      timeoutMs: 60_000,
    });
    return {
      host,
      async stop() {
        await server.stop();
        await removeTempDir(dir);
      },
    };
  } catch (err) {
    await removeTempDir(dir);
    throw err;
  }
}

async function startDockerRegistry(): Promise<Target> {
  const reg = await startRegistry();
  return { host: reg.host, stop: () => reg.stop() };
}

const cleanup = new Cleanup();
try {
  const tools = await imageTools();
  cleanup.add(() => tools.cleanup());
  const work = await tempDir('bench-hosted-work');
  cleanup.addDir(work);

  // The image: built as an OCI layout and pushed to a seed registry by the test helper, then copied into
  // a local layout (skopeo's source) and into buildah's storage (buildah's source).
  const seed = await startRegistry();
  cleanup.add(() => seed.stop());
  console.log(`building a ${layers}-layer image of ${layers * layerMiB} MiB (+ busybox) …`);
  const image = await pushMultiLayer(seed, 'bench/src', { layers, layerBytes: layerMiB << 20 });
  const layout = join(work, 'source');
  await tools.skopeo([
    'copy',
    '-q',
    '--src-tls-verify=false',
    `docker://${image.ref}`,
    `oci:${layout}:latest`,
  ]);
  await tools.buildah(['pull', '-q', '--tls-verify=false', `docker://${image.ref}`]);
  await seed.stop();
  console.log(`${image.layers} layers, ${(image.blobBytes / 2 ** 20).toFixed(1)} MiB of blobs`);

  const ops: Record<Op, (host: string, round: number) => Promise<unknown>> = {
    'buildah push': (host) =>
      tools.buildah(['push', '-q', '--tls-verify=false', image.ref, `docker://${host}/bench/buildah:latest`]),
    'skopeo push': (host) =>
      tools.skopeo([
        'copy',
        '-q',
        '--dest-tls-verify=false',
        `oci:${layout}:latest`,
        `docker://${host}/bench/skopeo:latest`,
      ]),
    'skopeo pull': async (host, round) => {
      const dest = join(work, `pulled-${round}-${host.replace(/[^0-9]/g, '')}`);
      try {
        await tools.skopeo([
          'copy',
          '-q',
          '--src-tls-verify=false',
          `docker://${host}/bench/skopeo:latest`,
          `oci:${dest}:latest`,
        ]);
      } finally {
        await removeTempDir(dest);
      }
    },
  };
  const starts: Record<Side, () => Promise<Target>> = {
    strata: () => startStrata(),
    'docker-registry': startDockerRegistry,
    baseline: () => startStrata(join(baseline ?? '.', 'bin', 'strata')),
  };
  const times: Record<Side, Record<Op, number[]>> = {
    strata: { 'buildah push': [], 'skopeo push': [], 'skopeo pull': [] },
    'docker-registry': { 'buildah push': [], 'skopeo push': [], 'skopeo pull': [] },
    baseline: { 'buildah push': [], 'skopeo push': [], 'skopeo pull': [] },
  };
  const order: Side[] = baseline ? ['docker-registry', 'baseline', 'strata'] : ['docker-registry', 'strata'];

  for (let round = 0; round <= rounds; round++) {
    // Round 0 warms every side (page cache, compile caches) and is not counted.
    const sides = round % 2 === 0 ? order : [...order].reverse();
    for (const side of sides) {
      const line: string[] = [];
      // buildah push gets a registry of its own: it would otherwise mount what skopeo pushed before.
      for (const group of GROUPS) {
        const target = await starts[side]();
        try {
          for (const op of group) {
            const ms = await timed(() => ops[op](target.host, round));
            if (round > 0) times[side][op].push(ms);
            line.push(`${op} ${ms.toFixed(0)} ms`);
          }
        } finally {
          await target.stop();
        }
      }
      console.log(`${round === 0 ? 'warm-up' : `round ${round}`} ${side}: ${line.join(', ')}`);
    }
  }

  const rows = [['operation', 'strata ms', 'docker-registry ms', 'ratio']];
  if (baseline) rows[0]!.push('baseline ms', 'baseline ratio');
  const ratios: string[] = [];
  for (const op of OPS) {
    const s = median(times.strata[op]);
    const d = median(times['docker-registry'][op]);
    const row = [op, s.toFixed(0), d.toFixed(0), (s / d).toFixed(3)];
    if (baseline) {
      const b = median(times.baseline[op]);
      row.push(b.toFixed(0), (b / d).toFixed(3));
    }
    rows.push(row);
    ratios.push(`${op} ${(s / d).toFixed(3)}`);
  }
  printTable(rows);
  console.log(`ratio strata/docker-registry (median time, target ≤ 1.0): ${ratios.join('; ')}`);
} finally {
  await cleanup.run();
}
