// The whole image side end to end, each service as the `strata` process users run: `strata builder`
// builds a Dockerfile from a git repository (its RUN writes a file) with buildah and pushes it; the
// facade composes the built image with an IDE image from a spec; a real containerd pulls the composed
// image from the facade and runs it, and the built file and the IDE's files are there.
import assert from 'node:assert/strict';
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import { type SeedBuilderClient, seedBuilderClient } from '../helpers/builder-client.ts';
import { startContainerd, type TestContainerd } from '../helpers/containerd.ts';
import { createRepo } from '../helpers/git-repo.ts';
import { type PushedImage, pushBusybox, pushFilesImage } from '../helpers/images.ts';
import { freePort, isListening } from '../helpers/ports.ts';
import { runCommand, runProcess, type ServerProcess, spawnServer } from '../helpers/process.ts';
import { startRegistry, type TestRegistry } from '../helpers/registry.ts';
import { removeTempDir, tempDir } from '../helpers/tmp.ts';

const STRATA = new URL('../../bin/strata', import.meta.url).pathname;

let work: string;
let reg: TestRegistry;
let ide: PushedImage;
let builder: ServerProcess;
let builderAddress: string;
let client: SeedBuilderClient;
let ctrd: TestContainerd;
const servers: ServerProcess[] = [];

before(async () => {
  work = await tempDir('builder-e2e');
  reg = await startRegistry();
  await pushBusybox(reg, 'base/busybox');
  ide = await pushFilesImage(reg, 'ide/code', {
    layers: [{ 'ide/bin/ide-marker': 'ide marker\n' }],
    env: ['GITPOD_ENV_APPEND_PATH=/ide/bin:'],
  });
  const port = await freePort();
  builderAddress = `127.0.0.1:${port}`;
  builder = await spawnServer(
    STRATA,
    [
      'builder',
      '--listen',
      builderAddress,
      '--base-repo',
      `${reg.host}/base-images`,
      '--workspace-repo',
      `${reg.host}/workspace-images`,
      '--root',
      join(work, 'builder'),
      '--plain-http-host',
      reg.host,
      '--storage-driver',
      'vfs',
      '--allow-file-remotes',
    ],
    { name: 'strata builder', logFile: join(work, 'builder.log'), readyCheck: () => isListening(port) },
  );
  servers.push(builder);
  client = await seedBuilderClient();
  ctrd = await startContainerd();
});

after(async () => {
  await ctrd?.stop();
  for (const s of servers.reverse()) await s.stop();
  await client?.cleanup();
  await reg?.stop();
  if (work) await removeTempDir(work);
});

test('built by strata builder, composed by strata facade with an IDE image, run by containerd', async () => {
  const repo = await createRepo(join(work, 'app'));
  await repo.commit({
    '.gitpod.Dockerfile': `FROM ${reg.host}/base/busybox\nRUN mkdir -p /workspace-tools && echo "made by RUN" > /workspace-tools/built.txt\n`,
  });
  const build = await client.call(builderAddress, 'Build', {
    source: {
      file: {
        source: {
          git: {
            remote_uri: repo.url,
            target_mode: 'REMOTE_BRANCH',
            clone_taget: 'main',
            checkout_location: 'app',
          },
        },
        dockerfile_path: 'app/.gitpod.Dockerfile',
        context_path: 'app',
      },
    },
  });
  const last = build.responses.at(-1);
  assert.equal(last?.status, 'done_success', JSON.stringify(build.responses));
  const built: string = last.ref;

  const specFile = join(work, 'ws.json');
  await writeFile(specFile, JSON.stringify({ baseRef: built, ideRef: ide.ref }));
  const store = join(work, 'specs');
  await runCommand(STRATA, ['spec', 'put', 'ws1', specFile, '--spec-store', store]);
  const facadePort = await freePort();
  const facadeHost = `127.0.0.1:${facadePort}`;
  servers.push(
    await spawnServer(
      STRATA,
      [
        'facade',
        '--listen',
        facadeHost,
        '--spec-store',
        store,
        '--cache-dir',
        join(work, 'cache'),
        '--plain-http-host',
        reg.host,
      ],
      {
        name: 'strata facade',
        logFile: join(work, 'facade.log'),
        readyCheck: async () => (await fetch(`http://${facadeHost}/readyz`)).status === 200,
      },
    ),
  );

  const ref = `${facadeHost}/remote/ws1:latest`;
  await ctrd.ctr(['images', 'pull', '--plain-http', ref]);
  const out = await ctrd.run(ref, 'e2e', ['cat', '/workspace-tools/built.txt', '/ide/bin/ide-marker']);
  assert.deepEqual(out.trim().split('\n'), ['made by RUN', 'ide marker']);
});

test('strata build: live status and log, the exit code from the outcome, logs and ls', async () => {
  const repo = await createRepo(join(work, 'cli-app'));
  await repo.commit({
    Dockerfile: `FROM ${reg.host}/base/busybox\nRUN echo cli-build-output\n`,
    'bad/Dockerfile': `FROM ${reg.host}/base/busybox\nRUN echo about-to-fail; exit 7\n`,
  });
  const ok = await runProcess(STRATA, ['build', repo.url, '--address', builderAddress, '--branch', 'main'], {
    timeoutMs: 300_000,
  });
  assert.equal(ok.code, 0, ok.stderr);
  assert.match(ok.stderr, /\[running\] .*no image for this key yet/);
  assert.match(ok.stdout, /cli-build-output/);
  const ref = ok.stdout.trim().split('\n').at(-1) ?? '';
  assert.match(ref, new RegExp(`^${reg.host}/workspace-images:[0-9a-f]{64}$`));

  const bad = await runProcess(
    STRATA,
    ['build', repo.url, '--address', builderAddress, '--dockerfile', 'bad/Dockerfile', '--no-logs'],
    { timeoutMs: 300_000 },
  );
  assert.equal(bad.code, 1, bad.stderr);
  assert.match(
    bad.stderr,
    /\[failed\] image build failed: STEP 2\/2: RUN echo about-to-fail; exit 7 failed.*\n[\s\S]*about-to-fail/,
  );
  assert.ok(!bad.stdout.includes('about-to-fail'), '--no-logs prints no log');

  const ls = await runProcess(STRATA, ['build', 'ls', '--address', builderAddress]);
  assert.equal(ls.code, 0, ls.stderr);
  const line = ls.stdout.split('\n').find((l) => l.endsWith(ref));
  assert.ok(line?.includes(' done '), ls.stdout);
  const logs = await runProcess(STRATA, ['build', 'logs', ref, '--address', builderAddress]);
  assert.equal(logs.code, 0, logs.stderr);
  assert.match(logs.stdout, /^Why this build:[\s\S]*cli-build-output/);
  const missing = await runProcess(STRATA, ['build', 'logs', 'no-such-ref', '--address', builderAddress]);
  assert.equal(missing.code, 2);
  assert.match(missing.stderr, /build not found/);
  const down = await runProcess(STRATA, ['build', 'ls', '--address', '127.0.0.1:1']);
  assert.equal(down.code, 2);
});
