// Strata's builder against buildah itself, side by side in one run, on the same Dockerfile and context:
//   cold:    a Build through `builder.ImageBuilder` (git fetch, key, buildah build, push, copy to the
//            workspace repository) vs `buildah build --layers` + `buildah push`, each on empty storage;
//   rebuild: after one COPY'd file changed, on the storage the cold build left (earlier layers reused in
//            both);
//   exists:  the round trip of a Build whose image already exists (target under 50 ms).
// Prints medians and the ratios Strata/buildah (target ≤ 1.1).
//
//   node bench/builder.ts            (ROUNDS=3 MIB=32 DRIVER=overlay EXISTS=30 to change the shape)
import { mkdir, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { pino } from 'pino';
import { BuildStatus, ImageBuilder } from '../src/api/gen/builder/imgbuilder_pb.ts';
import { CloneTargetMode } from '../src/api/gen/contentservice/initializer_pb.ts';
import { callServerStream, createClient } from '../src/api/grpc/client.ts';
import { builderConfigFrom, startBuilder } from '../src/server/builder.ts';
import { createRepo } from '../test/helpers/git-repo.ts';
import { pushBusybox } from '../test/helpers/images.ts';
import { runCommand } from '../test/helpers/process.ts';
import { startRegistry } from '../test/helpers/registry.ts';
import { Cleanup, tempDir } from '../test/helpers/tmp.ts';
import { intArg, median, printTable, timed } from './stats.ts';

const rounds = intArg('ROUNDS', 3);
const mib = intArg('MIB', 32);
const existsCalls = intArg('EXISTS', 30);
const driver = process.env.DRIVER ?? 'overlay';

const cleanup = new Cleanup();
try {
  const reg = await startRegistry();
  cleanup.add(() => reg.stop());
  const work = await tempDir('bench-builder');
  cleanup.addDir(work);
  const base = (await pushBusybox(reg, 'bench/busybox')).ref;
  const dockerfile = [
    `FROM ${base}`,
    `RUN busybox dd if=/dev/urandom of=/data bs=1048576 count=${mib} 2>/dev/null`,
    'COPY app.txt /app.txt',
    'RUN cat /app.txt > /copied.txt',
    '',
  ].join('\n');
  const registriesConf = join(work, 'registries.conf');
  await writeFile(registriesConf, 'unqualified-search-registries = []\n');

  const cold = { strata: [] as number[], buildah: [] as number[] };
  const rebuild = { strata: [] as number[], buildah: [] as number[] };
  const exists: number[] = [];

  for (let round = 1; round <= rounds; round++) {
    // Strata: a fresh builder (empty layer cache) and a repository whose content is new to it.
    const repo = await createRepo(join(work, `repo-${round}`));
    // Gitpod's server names the commit (REMOTE_COMMIT), so a request needs no ls-remote.
    let commit = await repo.commit({ Dockerfile: dockerfile, 'app.txt': `round ${round} v1\n` });
    const state = join(work, `state-${round}`);
    const running = await startBuilder(
      builderConfigFrom(
        {
          listen: '127.0.0.1:0',
          baseRepository: `${reg.host}/base-images`,
          workspaceRepository: `${reg.host}/workspace-images`,
          stateDir: state,
          plainHttpHosts: [reg.host],
          storageDriver: driver,
          allowFileRemotes: true,
        },
        work,
      ),
      pino({ level: 'warn' }),
    );
    const client = createClient(`127.0.0.1:${running.port}`);
    const request = () => ({
      source: {
        from: {
          case: 'file' as const,
          value: {
            source: {
              spec: {
                case: 'git' as const,
                value: { remoteUri: repo.url, targetMode: CloneTargetMode.REMOTE_COMMIT, cloneTaget: commit },
              },
            },
            dockerfilePath: 'Dockerfile',
            contextPath: '',
          },
        },
      },
    });
    const build = async (): Promise<number> => {
      let last: BuildStatus = BuildStatus.unknown;
      let messages = 0;
      for await (const r of callServerStream(client, ImageBuilder.method.build, request())) {
        last = r.status;
        messages++;
        if (r.status === BuildStatus.done_failure) throw new Error(r.message);
      }
      if (last !== BuildStatus.done_success) throw new Error('build did not succeed');
      return messages;
    };

    // buildah: its own empty storage, the same Dockerfile and context.
    const root = join(work, `buildah-${round}`);
    const ctx = join(work, `ctx-${round}`);
    await mkdir(ctx, { recursive: true });
    await writeFile(join(ctx, 'Dockerfile'), dockerfile);
    await writeFile(join(ctx, 'app.txt'), `round ${round} v1\n`);
    const buildah = (args: string[]) =>
      runCommand(
        'buildah',
        [
          '--root',
          join(root, 'storage'),
          '--runroot',
          join(root, 'run'),
          '--storage-driver',
          driver,
          ...args,
        ],
        {
          env: { CONTAINERS_REGISTRIES_CONF: registriesConf, BUILDAH_ISOLATION: 'chroot' },
          timeoutMs: 600_000,
        },
      );
    const anchor = async (tag: string) => {
      await buildah([
        'build',
        '--layers',
        '--isolation',
        'chroot',
        '--tls-verify=false',
        '-q',
        '-t',
        `localhost/bench:${tag}`,
        ctx,
      ]);
      await buildah([
        'push',
        '--tls-verify=false',
        '-q',
        `localhost/bench:${tag}`,
        `docker://${reg.host}/anchor:${tag}`,
      ]);
    };

    const pairs: Array<[string, () => Promise<unknown>, () => Promise<unknown>]> = [
      ['cold', build, () => anchor(`${round}-1`)],
      [
        'rebuild',
        async () => {
          commit = await repo.commit({ 'app.txt': `round ${round} v2\n` });
          return timed(build);
        },
        async () => {
          await writeFile(join(ctx, 'app.txt'), `round ${round} v2\n`);
          return timed(() => anchor(`${round}-2`));
        },
      ],
    ];
    for (const [what, strataRun, buildahRun] of pairs) {
      const order = round % 2 === 0 ? ['buildah', 'strata'] : ['strata', 'buildah'];
      for (const who of order) {
        let ms: number;
        if (what === 'cold') ms = await timed(who === 'strata' ? strataRun : buildahRun);
        else ms = (await (who === 'strata' ? strataRun : buildahRun)()) as number;
        (what === 'cold' ? cold : rebuild)[who as 'strata' | 'buildah'].push(ms);
        console.log(`round ${round}: ${what} ${who} ${ms.toFixed(0)} ms`);
      }
    }
    for (let i = 0; i < existsCalls; i++) {
      let messages = 0;
      const ms = await timed(async () => {
        messages = await build();
      });
      if (messages !== 1) throw new Error(`an existing image took ${messages} messages`);
      exists.push(ms);
    }
    console.log(
      `round ${round}: existing image round trip median ${median(exists.slice(-existsCalls)).toFixed(1)} ms`,
    );
    client.close();
    await running.close();
    await buildah(['rm', '--all']).catch(() => {});
    await rm(root, { recursive: true, force: true });
    await rm(state, { recursive: true, force: true });
  }

  const row = (name: string, s: number[], b: number[]) => [
    name,
    median(s).toFixed(0),
    median(b).toFixed(0),
    (median(s) / median(b)).toFixed(3),
  ];
  printTable([
    ['', 'strata ms', 'buildah ms', 'ratio'],
    row('cold build + push', cold.strata, cold.buildah),
    row('rebuild, one COPY changed', rebuild.strata, rebuild.buildah),
  ]);
  console.log(
    `existing image: Build round trip median ${median(exists).toFixed(1)} ms over ${exists.length} calls (target < 50 ms)`,
  );
  console.log('targets: cold and rebuild ratio ≤ 1.1');
} finally {
  await cleanup.run();
}
