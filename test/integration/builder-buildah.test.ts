// The builder end to end with its real parts: buildah (private vfs storage under a temp state dir), a
// docker-registry with htpasswd auth holding a busybox base, git repositories on disk (file://) and
// behind `git daemon` (git://), driven by a client generated from seed 001's proto by Python's grpc_tools.
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { mkdir, readdir, readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import { pino } from 'pino';
import { builderConfigFrom, type RunningBuilder, startBuilder } from '../../src/server/builder.ts';
import { type SeedBuilderClient, seedBuilderClient } from '../helpers/builder-client.ts';
import { startGitHttp } from '../helpers/git-http.ts';
import { createRepo, startGitDaemon, type TestRepo } from '../helpers/git-repo.ts';
import { pushBusybox, skopeoCopy, skopeoInspect } from '../helpers/images.ts';
import { runCommand, waitFor } from '../helpers/process.ts';
import { startRegistry, type TestRegistry } from '../helpers/registry.ts';
import { removeTempDir, tempDir } from '../helpers/tmp.ts';

const PASSWORD = `pw-${randomBytes(8).toString('hex')}`;
const USER = 'installer';

let dir: string;
let reg: TestRegistry;
let repo: TestRepo;
let builder: RunningBuilder;
let client: SeedBuilderClient;
let address: string;

const dockerfile = (base: string) =>
  [
    `FROM ${base}`,
    'COPY hello.txt /hello.txt',
    // Looks for the registry password in the environment and every file of the build's root: a leak fails
    // the step. buildah's chroot runner can drop what a step prints right before it exits (see
    // DESIGN-NOTES, Builder logs), so the lines the test reads from the log are followed by a pause.
    `RUN P="$(echo ${Buffer.from(PASSWORD).toString('base64')} | busybox base64 -d)"; env | sort; ` +
      'F="$(find / -xdev -type f -exec grep -l -F "$P" {} + 2>/dev/null)"; echo "LEAKS:[$F]"; ' +
      'cat /hello.txt; echo built > /built.txt; sleep 0.5; test -z "$F"',
    '',
  ].join('\n');

before(async () => {
  dir = await tempDir('builder-buildah');
  reg = await startRegistry({ auth: { mode: 'basic', users: { [USER]: PASSWORD } } });
  await pushBusybox(reg, 'library/busybox');
  repo = await createRepo(join(dir, 'repos', 'app'));
  await repo.commit({
    Dockerfile: dockerfile(`${reg.host}/library/busybox:latest`),
    'hello.txt': 'hello v1\n',
    'README.md': 'docs\n',
    // The pause: as above, so the failure's last output holds the line.
    'fail/Dockerfile': `FROM ${reg.host}/library/busybox\nRUN echo boom-output; sleep 0.5; exit 3\n`,
  });
  await mkdir(join(dir, 'auth'));
  const authDir = await reg.dockerConfig(join(dir, 'auth'));
  builder = await startBuilder(
    builderConfigFrom(
      {
        listen: '127.0.0.1:0',
        baseRepository: `${reg.host}/base-images`,
        workspaceRepository: `${reg.host}/workspace-images`,
        stateDir: join(dir, 'state'),
        dockerAuth: join(authDir, 'config.json'),
        plainHttpHosts: [reg.host],
        storageDriver: 'vfs',
        allowFileRemotes: true,
        secrets: ['hello v'],
        // Every layer is over budget: the cache is emptied once builds are idle.
        cacheMax: 1,
      },
      dir,
    ),
    pino({ level: 'silent' }),
  );
  address = `127.0.0.1:${builder.port}`;
  client = await seedBuilderClient();
});

after(async () => {
  await builder?.close();
  await client?.cleanup();
  await reg?.stop();
  await removeTempDir(dir);
});

const fileSource = (remote: string, dockerfilePath = 'repo/Dockerfile', contextPath = 'repo') => ({
  file: {
    source: { git: { remote_uri: remote, target_mode: 'REMOTE_HEAD', checkout_location: 'repo' } },
    dockerfile_path: dockerfilePath,
    context_path: contextPath,
  },
});
const ALL = { total: { allow_all: true } };

test('ResolveBaseImage: digest form, normalisation and the anchor codes', async () => {
  const ok = await client.call(address, 'ResolveBaseImage', {
    ref: `${reg.host}/library/busybox`,
    auth: ALL,
  });
  assert.equal(ok.code, 'OK');
  assert.match(ok.responses[0].ref, new RegExp(`^${reg.host}/library/busybox@sha256:[0-9a-f]{64}$`));
  const retry = await client.call(address, 'ResolveBaseImage', {
    ref: `${reg.host}/library/busybox:latest`,
    auth: ALL,
    use_retry_client: true,
  });
  assert.equal(retry.responses[0].ref, ok.responses[0].ref);
  const missing = await client.call(address, 'ResolveBaseImage', {
    ref: `${reg.host}/library/nope:1`,
    auth: ALL,
  });
  assert.deepEqual([missing.code, missing.details], ['NOT_FOUND', 'cannot resolve image']);
  const anonymous = await client.call(address, 'ResolveBaseImage', { ref: `${reg.host}/library/busybox` });
  assert.equal(anonymous.code, 'UNAUTHENTICATED');
  const bad = await client.call(address, 'ResolveBaseImage', { ref: 'Bad/Ref' });
  assert.equal(bad.code, 'INVALID_ARGUMENT');
});

test('Build: running messages with BuildInfo and the reason, one final message, replayable logs, no credential anywhere', async () => {
  const first = await client.call(address, 'Build', { source: fileSource(repo.url), auth: ALL });
  assert.equal(first.code, 'OK');
  const statuses = first.responses.map((r) => r.status);
  assert.equal(statuses.at(-1), 'done_success', JSON.stringify(first.responses));
  assert.equal(statuses.filter((s) => s !== 'running').length, 1, 'exactly one final message');
  const running = first.responses.find((r) => r.status === 'running');
  assert.match(running.message, /no image for this key yet/);
  assert.match(running.info.build_id, /^[0-9a-f-]{36}$/);
  assert.equal(running.info.ref, first.responses.at(-1).ref);
  assert.match(running.info.base_ref, new RegExp(`^${reg.host}/base-images:[0-9a-f]{64}$`));
  assert.ok(Number(running.info.started_at) > 1_700_000_000);
  const ref: string = first.responses.at(-1).ref;
  assert.match(ref, new RegExp(`^${reg.host}/workspace-images:[0-9a-f]{64}$`));
  await skopeoInspect(ref, { creds: { username: USER, password: PASSWORD } });
  const storage = join(dir, 'state', 'buildah', 'storage');
  const images = () =>
    runCommand('buildah', [
      '--root',
      storage,
      '--runroot',
      join(dir, 'state', 'buildah', 'run'),
      '--storage-driver',
      'vfs',
      'images',
      '-q',
      '--all',
    ]);
  await waitFor(async () => (await images()).trim() === '', 60_000);

  const logs = await client.call(address, 'Logs', { build_id: running.info.build_id });
  assert.equal(logs.code, 'OK');
  const text = logs.responses.map((r) => r.content).join('');
  assert.match(text, /^Why this build: no image for this key yet/);
  assert.match(text, /LEAKS:\[\]/);
  assert.match(text, /hello v1/);
  assert.ok(!text.includes(PASSWORD), 'the password is not in the log');
  assert.ok(!text.includes(Buffer.from(`${USER}:${PASSWORD}`).toString('base64')));
  assert.ok(!/REGISTRY_AUTH_FILE|auth\.json/.test(text), 'the RUN environment names no auth file');
  const censored = await client.call(address, 'Logs', { build_ref: ref, censored: true });
  const ctext = censored.responses.map((r) => r.content).join('');
  assert.ok(
    !ctext.includes('hello v1') && !ctext.includes(`${reg.host}/workspace-images`),
    'configured secrets and names removed',
  );
  const unknown = await client.call(address, 'Logs', { build_id: 'no-such-build' });
  assert.equal(unknown.code, 'NOT_FOUND');

  const again = await client.call(address, 'Build', { source: fileSource(repo.url), auth: ALL });
  assert.deepEqual(
    again.responses.map((r) => [r.status, r.ref, r.info ?? null]),
    [['done_success', ref, null]],
    'an existing image: one done_success at once',
  );

  await repo.commit({ 'README.md': 'more docs\n' });
  const readme = await client.call(address, 'Build', { source: fileSource(repo.url), auth: ALL });
  assert.deepEqual(
    readme.responses.map((r) => [r.status, r.ref]),
    [['done_success', ref]],
    'a commit the build does not read',
  );
  const ws = await client.call(address, 'ResolveWorkspaceImage', { source: fileSource(repo.url), auth: ALL });
  assert.deepEqual([ws.responses[0].ref, ws.responses[0].status], [ref, 'done_success']);
  assert.equal(ws.responses[0].base_ref, running.info.base_ref);

  await repo.commit({ 'hello.txt': 'hello v2\n' });
  const changed = await client.call(address, 'Build', { source: fileSource(repo.url), auth: ALL });
  assert.equal(changed.responses.at(-1).status, 'done_success', JSON.stringify(changed.responses));
  assert.notEqual(changed.responses.at(-1).ref, ref, "a COPY'd file changes the image");
  assert.match(changed.responses[0].message, /context files changed: modified hello\.txt/);

  const list = await client.call(address, 'ListBuilds', {});
  const ids = list.responses[0].builds.map((b: { build_id: string }) => b.build_id);
  assert.ok(ids.includes(running.info.build_id));
  assert.ok(list.responses[0].builds.every((b: { status: string }) => b.status === 'done_success'));
});

test('registry credentials follow the request policy: selective without the registry gets none, additional gives its own', async () => {
  const selective = { selective: { allow_baserep: false, allow_workspacerep: false, any_of: ['docker.io'] } };
  const denied = await client.call(address, 'Build', { source: fileSource(repo.url), auth: selective });
  assert.equal(denied.code, 'UNAUTHENTICATED', JSON.stringify(denied));
  const own = {
    ...selective,
    additional: { [reg.host]: Buffer.from(`${USER}:${PASSWORD}`).toString('base64') },
  };
  const allowed = await client.call(address, 'Build', { source: fileSource(repo.url), auth: own });
  assert.deepEqual(
    allowed.responses.map((r) => r.status),
    ['done_success'],
    JSON.stringify(allowed),
  );
  const anyOf = { selective: { any_of: [reg.host] } };
  const listed = await client.call(address, 'ResolveBaseImage', {
    ref: `${reg.host}/library/busybox`,
    auth: anyOf,
  });
  assert.equal(listed.code, 'OK', 'a registry in any_of gets the installation credentials');
});

test('a failing RUN: done_failure with the step and its last output, nothing pushed', async () => {
  const r = await client.call(address, 'Build', {
    source: fileSource(repo.url, 'repo/fail/Dockerfile', 'repo/fail'),
    auth: ALL,
  });
  assert.equal(r.code, 'OK');
  const last = r.responses.at(-1);
  assert.equal(last.status, 'done_failure');
  assert.equal(r.responses.filter((x) => x.status !== 'running').length, 1);
  assert.match(
    last.message,
    /^image build failed: STEP 2\/2: RUN echo boom-output; sleep 0.5; exit 3 failed/,
  );
  assert.match(last.message, /boom-output/);
  await assert.rejects(skopeoInspect(last.info.base_ref, { creds: { username: USER, password: PASSWORD } }));
  await assert.rejects(skopeoInspect(last.ref, { creds: { username: USER, password: PASSWORD } }));
});

test('git:// remotes through git daemon; a ref source is copied registry to registry', async (t) => {
  const daemon = await startGitDaemon(join(dir, 'repos'), t);
  const viaDaemon = await client.call(address, 'Build', { source: fileSource(daemon.url('app')), auth: ALL });
  assert.equal(viaDaemon.responses.at(-1).status, 'done_success', JSON.stringify(viaDaemon.responses));

  const refBuild = await client.call(address, 'Build', {
    source: { ref: { ref: `${reg.host}/library/busybox:latest` } },
    auth: ALL,
  });
  const last = refBuild.responses.at(-1);
  assert.equal(last.status, 'done_success', JSON.stringify(refBuild.responses));
  assert.match(last.base_ref, new RegExp(`^${reg.host}/library/busybox@sha256:`));
  const copied = (await skopeoInspect(last.ref, { creds: { username: USER, password: PASSWORD } })) as {
    Digest: string;
  };
  assert.equal(copied.Digest, last.base_ref.split('@')[1]);
  const logs = await client.call(address, 'Logs', { build_id: last.info.build_id });
  assert.match(logs.responses.map((x) => x.content).join(''), /mounted/);
});

test('http:// remotes with BASIC_AUTH: the credentials are used for git and appear in no log', async (t) => {
  const gitAuth = { username: 'gituser', password: `git-${randomBytes(6).toString('hex')}` };
  const http = await startGitHttp(join(dir, 'repos'), t, gitAuth);
  const source = (config?: object) => ({
    file: {
      source: {
        git: {
          remote_uri: http.url('app'),
          target_mode: 'REMOTE_BRANCH',
          clone_taget: 'main',
          checkout_location: 'repo',
          ...(config && { config }),
        },
      },
      dockerfile_path: 'repo/Dockerfile',
      context_path: 'repo',
    },
  });
  const anonymous = await client.call(address, 'Build', { source: source(), auth: ALL });
  assert.equal(anonymous.code, 'UNAVAILABLE', JSON.stringify(anonymous));
  const config = {
    authentication: 'BASIC_AUTH',
    auth_user: gitAuth.username,
    auth_password: gitAuth.password,
  };
  const built = await client.call(address, 'Build', {
    source: source(config),
    auth: ALL,
    force_rebuild: true,
  });
  const last = built.responses.at(-1);
  assert.equal(last.status, 'done_success', JSON.stringify(built.responses));
  assert.match(built.responses[0].message, /force_rebuild/);
  const logs = await client.call(address, 'Logs', { build_id: last.info.build_id });
  const text = logs.responses.map((r) => r.content).join('');
  assert.match(text, /Fetching|Using/);
  assert.ok(!text.includes(gitAuth.password));
});

/** Processes whose command line is `sleep <seconds>` (a marker a test's RUN step picked). */
async function sleepers(seconds: number): Promise<number[]> {
  const ps = await runCommand('ps', ['-eo', 'pid=,args=']);
  return ps
    .split('\n')
    .map((l) => l.trim().split(/\s+/))
    .filter(([, cmd, arg, more]) => cmd === 'sleep' && arg === String(seconds) && more === undefined)
    .map(([pid]) => Number(pid));
}

function killAll(pids: number[]): void {
  for (const pid of pids) {
    try {
      process.kill(pid, 'SIGKILL');
    } catch {
      // Already gone.
    }
  }
}

test('a daemon a RUN step starts (out of its process group) does not outlive the build', async () => {
  await repo.commit({
    'daemon/Dockerfile': `FROM ${reg.host}/library/busybox\nRUN (setsid sleep 7301 &); echo daemon started\n`,
  });
  try {
    const r = await client.call(address, 'Build', {
      source: fileSource(repo.url, 'repo/daemon/Dockerfile', 'repo/daemon'),
      auth: ALL,
    });
    assert.equal(r.responses.at(-1).status, 'done_success', JSON.stringify(r.responses));
    await waitFor(async () => (await sleepers(7301)).length === 0, 10_000, {
      what: 'the daemon of the RUN step gone',
    });
  } finally {
    killAll(await sleepers(7301));
  }
});

test('a build killed at its timeout leaves no buildah container, process or work dir behind', async () => {
  await repo.commit({
    'slow/Dockerfile': `FROM ${reg.host}/library/busybox\nRUN (setsid sleep 7302 &); sleep 600\n`,
  });
  const state = join(dir, 'state-timeout');
  const slow = await startBuilder(
    builderConfigFrom(
      {
        listen: '127.0.0.1:0',
        baseRepository: `${reg.host}/base-images`,
        workspaceRepository: `${reg.host}/workspace-images`,
        stateDir: state,
        dockerAuth: join(dir, 'auth', 'config.json'),
        plainHttpHosts: [reg.host],
        storageDriver: 'vfs',
        allowFileRemotes: true,
        timeoutSeconds: 10,
      },
      dir,
    ),
    pino({ level: 'silent' }),
  );
  try {
    const r = await client.call(`127.0.0.1:${slow.port}`, 'Build', {
      source: fileSource(repo.url, 'repo/slow/Dockerfile', 'repo/slow'),
      auth: ALL,
    });
    assert.equal(r.responses.at(-1).status, 'done_failure');
    assert.match(r.responses.at(-1).message, /did not finish within 10 s/);
    const containers = () =>
      runCommand('buildah', [
        '--root',
        join(state, 'buildah', 'storage'),
        '--runroot',
        join(state, 'buildah', 'run'),
        '--storage-driver',
        'vfs',
        'containers',
        '--quiet',
      ]);
    // Removed once the builder is idle, which is after the final message went out.
    await waitFor(async () => (await containers()).trim() === '', 60_000, {
      what: 'working containers of the killed build removed',
    });
    assert.deepEqual(await readdir(join(state, 'work')), []);
    await waitFor(async () => (await sleepers(7302)).length === 0, 10_000, {
      what: 'the daemon the killed RUN step started gone',
    });
  } finally {
    killAll(await sleepers(7302));
    await slow.close();
  }
});

/** A file of a pushed image, as the topmost of its layers (gzip tars) that holds it has it. */
async function imageFile(ref: string, path: string): Promise<string> {
  const work = await tempDir('image-file');
  try {
    await skopeoCopy(ref, `dir:${work}`, { srcCreds: { username: USER, password: PASSWORD } });
    const manifest = JSON.parse(await readFile(join(work, 'manifest.json'), 'utf8')) as {
      layers: Array<{ digest: string }>;
    };
    for (const layer of manifest.layers.toReversed()) {
      const blob = join(work, layer.digest.replace(/^sha256:/, ''));
      const entries = (await runCommand('tar', ['-tzf', blob])).split('\n');
      const entry = entries.find((e) => e.replace(/^\.\//, '') === path);
      if (entry !== undefined) return await runCommand('tar', ['-xzOf', blob, entry]);
    }
    throw new Error(`${path} is in no layer of ${ref}`);
  } finally {
    await removeTempDir(work);
  }
}

test('submodules are in the build context: relative and nested ones; a refused one fails naming its path, an ssh one is left empty', async () => {
  const nested = await createRepo(join(dir, 'repos', 'sub-nested'));
  const lib = await createRepo(join(dir, 'repos', 'sub-lib'));
  const app = await createRepo(join(dir, 'repos', 'sub-app'));
  await lib.gitlink('deep', await nested.commit({ 'nested.txt': 'nested says hi\n' }));
  const libAt = await lib.commit({
    'greeting.txt': 'lib says hello\n',
    '.gitmodules': `[submodule "deep"]\n\tpath = deep\n\turl = ${nested.url}\n`,
  });
  await app.gitlink('vendor/lib', libAt);
  // What the submodules brought is read from the image, not from a RUN step's output in the log: buildah's
  // chroot runtime may exit before it has relayed a step's last output, which is then missing from the log.
  await app.commit({
    Dockerfile: [
      `FROM ${reg.host}/library/busybox`,
      'COPY vendor/lib/greeting.txt /greeting.txt',
      'COPY vendor/lib/deep /deep/',
      '',
    ].join('\n'),
    '.gitmodules': '[submodule "lib"]\n\tpath = vendor/lib\n\turl = ../sub-lib\n',
  });
  const built = await client.call(address, 'Build', { source: fileSource(app.url), auth: ALL });
  const last = built.responses.at(-1);
  assert.equal(last.status, 'done_success', JSON.stringify(built.responses));
  assert.equal(await imageFile(last.ref, 'greeting.txt'), 'lib says hello\n');
  assert.equal(await imageFile(last.ref, 'deep/nested.txt'), 'nested says hi\n');
  const logs = await client.call(address, 'Logs', { build_id: last.info.build_id });
  const text = logs.responses.map((r) => r.content).join('');
  assert.match(text, /Submodule vendor\/lib\/deep at [0-9a-f]{40}/);

  // Only the nested submodule's pinned commit moves: a new key, a new image.
  await lib.gitlink('deep', await nested.commit({ 'nested.txt': 'nested says bye\n' }));
  await app.gitlink('vendor/lib', await lib.commit({}, 'bump deep'));
  await app.commit({}, 'bump lib');
  const bumped = await client.call(address, 'Build', { source: fileSource(app.url), auth: ALL });
  assert.equal(bumped.responses.at(-1).status, 'done_success', JSON.stringify(bumped.responses));
  assert.notEqual(bumped.responses.at(-1).ref, last.ref);
  assert.match(bumped.responses[0].message, /modified vendor\/lib\/deep\/nested\.txt/);
  assert.equal(await imageFile(bumped.responses.at(-1).ref, 'deep/nested.txt'), 'nested says bye\n');

  await app.commit({
    '.gitmodules': '[submodule "lib"]\n\tpath = vendor/lib\n\turl = https://u:p@127.0.0.1/lib\n',
  });
  const refused = await client.call(address, 'Build', { source: fileSource(app.url), auth: ALL });
  assert.equal(refused.code, 'INVALID_ARGUMENT', JSON.stringify(refused));
  assert.match(refused.details ?? '', /submodule vendor\/lib: git remote must not carry credentials/);

  // An ssh submodule (the builder holds no keys) is left empty, as Gitpod's clone goes on without it.
  await app.commit({
    // The step's exit status says it (see above for why not its output).
    Dockerfile: `FROM ${reg.host}/library/busybox\nCOPY vendor /vendor/\nRUN test -d /vendor/lib && test -z "$(ls -A /vendor/lib)"\n`,
    '.gitmodules': '[submodule "lib"]\n\tpath = vendor/lib\n\turl = git@127.0.0.1:lib.git\n',
  });
  const sshBuilt = await client.call(address, 'Build', { source: fileSource(app.url), auth: ALL });
  const sshLast = sshBuilt.responses.at(-1);
  assert.equal(
    sshLast.status,
    'done_success',
    `the submodule directory is empty: ${JSON.stringify(sshBuilt.responses)}`,
  );
  const sshLog = (await client.call(address, 'Logs', { build_id: sshLast.info.build_id })).responses
    .map((r) => r.content)
    .join('');
  assert.match(sshLog, /Submodule vendor\/lib left empty: ssh remotes are not fetched/);
});

test('a submodule on the source origin gets its BASIC_AUTH credentials; one on another origin gets none', async (t) => {
  const gitAuth = { username: 'subuser', password: `sub-${randomBytes(6).toString('hex')}` };
  const http = await startGitHttp(join(dir, 'repos'), t, gitAuth);
  const other = await startGitHttp(join(dir, 'repos'), t, gitAuth);
  const lib = await createRepo(join(dir, 'repos', 'auth-lib'));
  const app = await createRepo(join(dir, 'repos', 'auth-app'));
  await app.gitlink('lib', await lib.commit({ 'greeting.txt': 'private lib\n' }));
  await app.commit({
    Dockerfile: `FROM ${reg.host}/library/busybox\nCOPY lib/greeting.txt /g.txt\nRUN cat /g.txt\n`,
    '.gitmodules': '[submodule "lib"]\n\tpath = lib\n\turl = ../auth-lib\n',
  });
  const source = {
    file: {
      source: {
        git: {
          remote_uri: http.url('auth-app'),
          target_mode: 'REMOTE_HEAD',
          checkout_location: 'repo',
          config: {
            authentication: 'BASIC_AUTH',
            auth_user: gitAuth.username,
            auth_password: gitAuth.password,
          },
        },
      },
      dockerfile_path: 'repo/Dockerfile',
      context_path: 'repo',
    },
  };
  const built = await client.call(address, 'Build', { source, auth: ALL });
  assert.equal(built.responses.at(-1).status, 'done_success', JSON.stringify(built.responses));

  await app.commit({ '.gitmodules': `[submodule "lib"]\n\tpath = lib\n\turl = ${other.url('auth-lib')}\n` });
  const elsewhere = await client.call(address, 'Build', { source, auth: ALL });
  assert.equal(elsewhere.code, 'UNAVAILABLE', JSON.stringify(elsewhere));
  assert.match(
    elsewhere.details ?? '',
    /^submodule lib: git fetch of http:\/\/127\.0\.0\.1:\d+\/auth-lib failed/,
  );
  assert.ok(other.refused > 0, 'the other origin was asked without credentials');
  assert.ok(!(elsewhere.details ?? '').includes(gitAuth.password));
});
