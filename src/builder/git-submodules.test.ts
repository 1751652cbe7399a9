import assert from 'node:assert/strict';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import { createRepo, startGitDaemon, type TestRepo } from '../../test/helpers/git-repo.ts';
import { removeTempDir, tempDir } from '../../test/helpers/tmp.ts';
import { errorKind } from '../errors.ts';
import { buildKey } from './build-key.ts';
import { prepareInputs, readSnapshot } from './dockerfile-source.ts';
import { GitRepo } from './git-source.ts';
import { checkoutSubmodules, fetchSubmodules, submoduleUri } from './git-submodules.ts';

let dir: string;
/** repos/app pins repos/lib (relative URL ../lib) at lib/, which pins repos/nested (absolute URL) at deep/. */
let app: TestRepo;
let lib: TestRepo;
let nested: TestRepo;

before(async () => {
  dir = await tempDir('git-submodules');
  nested = await createRepo(join(dir, 'repos', 'nested'));
  lib = await createRepo(join(dir, 'repos', 'lib'));
  app = await createRepo(join(dir, 'repos', 'app'));
  const nestedAt = await nested.commit({ 'nested.txt': 'nested v1\n' });
  await lib.gitlink('deep', nestedAt);
  const libAt = await lib.commit({
    'greeting.txt': 'hello from lib v1\n',
    '.gitmodules': `[submodule "deep"]\n\tpath = deep\n\turl = ${nested.url}\n`,
  });
  await app.gitlink('lib', libAt);
  await app.commit({
    Dockerfile: 'FROM busybox\nCOPY lib/greeting.txt /greeting.txt\n',
    '.gitmodules': '[submodule "lib"]\n\tpath = lib\n\turl = ../lib\n',
  });
});
after(() => removeTempDir(dir));

let n = 0;
function open(remote: string, commit: string, allowFileRemotes = true): GitRepo {
  return GitRepo.open(
    join(dir, 'work', `git-${n++}`),
    {
      remoteUri: remote,
      targetMode: 'remoteCommit',
      cloneTarget: commit,
      checkoutLocation: '',
      fullClone: false,
    },
    { allowFileRemotes, timeoutMs: 30_000 },
  );
}

async function snapshotOf(repo: GitRepo) {
  const commit = await repo.fetch(await repo.resolveCommit());
  return readSnapshot(repo, commit, { dockerfilePath: 'Dockerfile', contextPath: '' });
}

async function keyOf(repo: GitRepo) {
  const snapshot = await snapshotOf(repo);
  const prepared = await prepareInputs(snapshot, {
    buildArgs: {},
    version: '',
    workspacePaths: { dockerfilePath: 'Dockerfile', contextPath: '' },
    pin: async (image) => `docker.io/library/${image}@sha256:${'1'.repeat(64)}`,
    platform: 'linux/amd64',
  });
  return { key: await buildKey(prepared.inputs), files: new Map(prepared.inputs.files) };
}

test('relative submodule URLs resolve against the superproject remote as git resolves them', () => {
  const base = 'https://git.example/org/app.git';
  assert.equal(submoduleUri('../lib.git', base), 'https://git.example/org/lib.git');
  assert.equal(submoduleUri('./lib', `${base}/`), 'https://git.example/org/app.git/lib');
  assert.equal(submoduleUri('../../other/lib', base), 'https://git.example/other/lib');
  assert.equal(submoduleUri('https://elsewhere.example/x', base), 'https://elsewhere.example/x');
  assert.equal(submoduleUri('../x', 'file:///srv/app'), 'file:///srv/x');
  assert.throws(() => submoduleUri('../../../x', base), /climbs above/);
});

test('submodules (relative URL, nested) are listed with their files and checked out in place', async () => {
  const repo = open(app.url, await app.head());
  const snapshot = await snapshotOf(repo);
  const paths = snapshot.entries.map((e) => e.path).sort();
  assert.deepEqual(paths, [
    '.gitmodules',
    'Dockerfile',
    'lib/.gitmodules',
    'lib/deep/nested.txt',
    'lib/greeting.txt',
  ]);
  assert.deepEqual(
    snapshot.submodules.map((s) => [s.path, s.uri]),
    [
      ['lib', `${app.url.replace(/\/app$/, '')}/lib`],
      ['lib/deep', nested.url],
    ],
  );

  // A build's own git directory, fetched from the plan's list, checks out the same files.
  const fresh = open(app.url, snapshot.commit);
  await fresh.fetch(snapshot.commit);
  await fetchSubmodules(fresh, snapshot.submodules);
  const tree = join(dir, 'work', `tree-${n++}`);
  await fresh.checkout(snapshot.commit, tree);
  await checkoutSubmodules(fresh, snapshot.submodules, tree);
  assert.equal(await readFile(join(tree, 'lib', 'greeting.txt'), 'utf8'), 'hello from lib v1\n');
  assert.equal(await readFile(join(tree, 'lib', 'deep', 'nested.txt'), 'utf8'), 'nested v1\n');
});

test('the key changes when only the pinned commit of a submodule changes', async () => {
  const before = await keyOf(open(app.url, await app.head()));
  assert.ok(before.files.has('lib/greeting.txt'));
  const libAt = await lib.commit({ 'greeting.txt': 'hello from lib v2\n' });
  await app.gitlink('lib', libAt);
  const superAt = await app.commit({}, 'bump lib');
  const afterBump = await keyOf(open(app.url, superAt));
  assert.notEqual(afterBump.key, before.key);
  assert.notEqual(afterBump.files.get('lib/greeting.txt'), before.files.get('lib/greeting.txt'));
});

test('a refused or unfetchable submodule fails with a message naming its path', async () => {
  const bad = await createRepo(join(dir, 'repos', `bad-${n++}`));
  const pinned = await lib.head();
  const cases: Array<[string, RegExp, string]> = [
    [
      'https://u:p@git.example/lib.git',
      /submodule vendor\/lib: .*must not carry credentials/,
      'InvalidArgument',
    ],
    [
      'gopher://git.example/lib.git',
      /submodule vendor\/lib: .*protocol gopher is not supported/,
      'InvalidArgument',
    ],
    // The nested repo exists but has no such commit.
    [nested.url, /submodule vendor\/lib: .*is not in/, 'NotFound'],
  ];
  for (const [url, message, kind] of cases) {
    await bad.gitlink('vendor/lib', pinned);
    const at = await bad.commit({
      Dockerfile: 'FROM busybox\nCOPY . /src/\n',
      '.gitmodules': `[submodule "lib"]\n\tpath = vendor/lib\n\turl = ${url}\n`,
    });
    await assert.rejects(snapshotOf(open(bad.url, at)), (err: Error) => {
      assert.match(err.message, message);
      assert.equal(errorKind(err), kind);
      return true;
    });
  }
});

test('an ssh submodule is left empty, keyed by its gitlink, as a clone without keys leaves it', async () => {
  for (const url of ['ssh://git.example/lib.git', 'git@git.example:lib.git', 'git+ssh://git.example/lib']) {
    const repo = await createRepo(join(dir, 'repos', `ssh-${n++}`));
    const pinned = '3'.repeat(40);
    await repo.gitlink('vendor/lib', pinned);
    const at = await repo.commit({
      Dockerfile: 'FROM busybox\n',
      '.gitmodules': `[submodule "lib"]\n\tpath = vendor/lib\n\turl = ${url}\n`,
    });
    const snapshot = await snapshotOf(open(repo.url, at));
    assert.deepEqual(
      snapshot.submodules.map((m) => [m.path, m.commit, m.skipped !== undefined]),
      [['vendor/lib', pinned, true]],
      url,
    );
    assert.ok(
      snapshot.entries.some((e) => e.path === 'vendor/lib' && e.mode === '160000'),
      'the gitlink stays in the listing',
    );
  }
});

test('file:// submodules follow the builder file:// switch, like the source remote', async (t) => {
  const daemon = await startGitDaemon(join(dir, 'repos'), t);
  const name = `file-sub-${n++}`;
  const superRepo = await createRepo(join(dir, 'repos', name));
  await superRepo.gitlink('lib', await lib.head());
  const at = await superRepo.commit({
    Dockerfile: 'FROM busybox\n',
    '.gitmodules': `[submodule "lib"]\n\tpath = lib\n\turl = ${lib.url}\n`,
  });
  await assert.rejects(
    snapshotOf(open(daemon.url(name), at, false)),
    /submodule lib: file:\/\/ git remotes are disabled/,
  );
  // A relative URL under git:// stays git:// and is fetched; lib's own (nested, file://) is refused.
  await superRepo.commit({ '.gitmodules': '[submodule "lib"]\n\tpath = lib\n\turl = ../lib\n' });
  await assert.rejects(
    snapshotOf(open(daemon.url(name), await superRepo.head(), false)),
    /: submodule lib\/deep: file:\/\/ git remotes are disabled/,
  );
});

test('a submodule outside the context, or with update = none, is not fetched', async () => {
  const repoDir = await createRepo(join(dir, 'repos', `outside-${n++}`));
  await repoDir.gitlink('vendor/gone', '1'.repeat(40));
  const at = await repoDir.commit({
    'app/Dockerfile': 'FROM busybox\nCOPY . /app/\n',
    '.gitmodules': '[submodule "gone"]\n\tpath = vendor/gone\n\turl = ssh://nowhere.example/x\n',
  });
  const repo = open(repoDir.url, at);
  const commit = await repo.fetch(at);
  const snapshot = await readSnapshot(repo, commit, { dockerfilePath: 'app/Dockerfile', contextPath: 'app' });
  assert.deepEqual(snapshot.submodules, []);
  // Nor one `git submodule update` skips (update = none): it stays an empty directory.
  await repoDir.gitlink('app/skipped', '2'.repeat(40));
  const skipped = await repoDir.commit({
    '.gitmodules':
      '[submodule "skipped"]\n\tpath = app/skipped\n\turl = ssh://nowhere.example/y\n\tupdate = none\n',
  });
  const again = open(repoDir.url, skipped);
  const listed = await readSnapshot(again, await again.fetch(skipped), {
    dockerfilePath: 'app/Dockerfile',
    contextPath: 'app',
  });
  assert.deepEqual(listed.submodules, []);
  assert.deepEqual(
    listed.entries.map((e) => [e.path, e.mode]),
    [
      ['Dockerfile', '100644'],
      ['skipped', '160000'],
    ],
  );
});
