import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { mkdir, symlink, writeFile } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { after, before, test } from 'node:test';
import { removeTempDir, tempDir } from '../../test/helpers/tmp.ts';
import { errorKind } from '../errors.ts';
import { type BuildInputs, buildKey, describeChanges, fileIdsOf, filesRecord } from './build-key.ts';
import type { ContextEntry } from './context-files.ts';
import { prepareInputs, readSnapshot } from './dockerfile-source.ts';
import { GitRepo, repoPath } from './git-source.ts';

let dir: string;
let origin: string;
const git = (...args: string[]) =>
  execFileSync('git', ['-C', origin, '-c', 'user.name=t', '-c', 'user.email=t@e', ...args], {
    encoding: 'utf8',
  }).trim();

async function commit(files: Record<string, string>, message = 'change'): Promise<string> {
  for (const [path, text] of Object.entries(files)) {
    await mkdir(dirname(join(origin, path)), { recursive: true });
    await writeFile(join(origin, path), text);
  }
  git('add', '-A');
  git('commit', '-q', '--allow-empty', '-m', message);
  return git('rev-parse', 'HEAD');
}

before(async () => {
  dir = await tempDir('build-key');
  origin = join(dir, 'origin');
  await mkdir(origin);
  git('init', '-q', '-b', 'main');
  await commit({
    'app/Dockerfile': 'FROM busybox\nCOPY src/ /src/\nCOPY conf.txt /conf.txt\n',
    'app/.dockerignore': 'src/*.tmp\n',
    'app/src/main.sh': 'echo main\n',
    'app/src/scratch.tmp': 'x\n',
    'app/conf.txt': 'a=1\n',
    'app/README.md': 'docs\n',
    'other/file.txt': 'elsewhere\n',
  });
});
after(() => removeTempDir(dir));

let n = 0;
async function keyAt(
  commitId: string,
  buildArgs: Record<string, string> = {},
  sub = 'app',
  dockerfilePath = `${sub}/Dockerfile`,
  platform = 'linux/amd64',
) {
  const repo = GitRepo.open(
    join(dir, `git-${n++}`),
    {
      remoteUri: `file://${origin}`,
      targetMode: 'remoteCommit',
      cloneTarget: commitId,
      checkoutLocation: '',
      fullClone: false,
    },
    { allowFileRemotes: true, timeoutMs: 30_000 },
  );
  const fetched = await repo.fetch(await repo.resolveCommit());
  const snapshot = await readSnapshot(repo, fetched, { dockerfilePath, contextPath: sub });
  const prepared = await prepareInputs(snapshot, {
    buildArgs,
    version: '',
    workspacePaths: { dockerfilePath, contextPath: sub },
    pin: async (image) => `docker.io/library/${image}@sha256:${'1'.repeat(64)}`,
    platform,
  });
  return { key: await buildKey(prepared.inputs), inputs: prepared.inputs };
}

test("a commit that changes nothing the build reads keeps the key; a COPY'd file changes it", async () => {
  const first = await keyAt(git('rev-parse', 'HEAD'));
  assert.deepEqual(
    first.inputs.files.map(([path]) => path),
    ['conf.txt', 'src/main.sh'],
  );

  const readme = await keyAt(await commit({ 'app/README.md': 'more docs\n' }));
  assert.equal(readme.key, first.key, 'a file no COPY reads');
  const outside = await keyAt(await commit({ 'other/file.txt': 'changed\n' }));
  assert.equal(outside.key, first.key, 'a file outside the context');
  const ignored = await keyAt(await commit({ 'app/src/scratch.tmp': 'y\n' }));
  assert.equal(ignored.key, first.key, 'a file .dockerignore excludes');
  const empty = await keyAt(await commit({}, 'empty commit'));
  assert.equal(empty.key, first.key, 'a commit with no change');

  const copied = await keyAt(await commit({ 'app/src/main.sh': 'echo changed\n' }));
  assert.notEqual(copied.key, first.key);
  assert.deepEqual(await describeChanges(first.inputs, copied.inputs), [
    'context files changed: modified src/main.sh',
  ]);

  const added = await keyAt(await commit({ 'app/src/new.sh': 'new\n' }));
  assert.deepEqual(await describeChanges(copied.inputs, added.inputs), [
    'context files changed: added src/new.sh',
  ]);

  const df = await keyAt(
    await commit({ 'app/Dockerfile': 'FROM busybox\nCOPY src/ /src/\nCOPY conf.txt /c\n' }),
  );
  assert.notEqual(df.key, added.key);
  assert.deepEqual(await describeChanges(added.inputs, df.inputs), ['the Dockerfile changed']);
});

test("a Dockerfile that names no image keys the builder's platform; one that does, its pinned images", async () => {
  const scratch = await commit({ 'bare/Dockerfile': 'FROM scratch\nCOPY f /f\n', 'bare/f': 'x\n' });
  const amd = await keyAt(scratch, {}, 'bare', 'bare/Dockerfile', 'linux/amd64');
  const arm = await keyAt(scratch, {}, 'bare', 'bare/Dockerfile', 'linux/arm64/v8');
  assert.notEqual(amd.key, arm.key, 'builders of two platforms sharing a repository');
  assert.deepEqual(await describeChanges(amd.inputs, arm.inputs), [
    'platform changed from linux/amd64 to linux/arm64/v8',
  ]);
  // With an image, the pin says the platform (and the keys of such Dockerfiles are as they were).
  const withImage = await keyAt(scratch, {}, 'app', 'app/Dockerfile', 'linux/amd64');
  assert.equal(withImage.inputs.platform, undefined);
  assert.equal(
    withImage.key,
    (await keyAt(scratch, {}, 'app', 'app/Dockerfile', 'linux/arm64/v8')).key,
    'the fake pin here names the same digest for both',
  );
});

test('build args, pinned images and the format are part of the key', async () => {
  const head = git('rev-parse', 'HEAD');
  const a = await keyAt(head);
  const b = await keyAt(head, { X: '1' });
  assert.notEqual(a.key, b.key);
  assert.deepEqual(await describeChanges(a.inputs, b.inputs), ['build args changed: X']);
  const moved = { ...a.inputs, images: { busybox: `docker.io/library/busybox@sha256:${'2'.repeat(64)}` } };
  assert.notEqual(await buildKey(moved), a.key);
  assert.deepEqual(await describeChanges(a.inputs, moved), [
    `base image busybox moved from sha256:${'1'.repeat(64)} to sha256:${'2'.repeat(64)}`,
  ]);
});

test('a COPY source through a symlink (buildah follows it): what the link points at is in the key', async () => {
  await commit({
    'linked/Dockerfile': 'FROM busybox\nCOPY conf /conf\nCOPY tools/run.sh /run.sh\n',
    'linked/real/a.conf': 'a=1\n',
    'linked/bin/run.sh': 'echo 1\n',
  });
  await symlink('real', join(origin, 'linked/conf'));
  await symlink('bin', join(origin, 'linked/tools'));
  const first = await keyAt(await commit({}, 'links'), {}, 'linked');
  const target = await keyAt(await commit({ 'linked/real/a.conf': 'a=2\n' }), {}, 'linked');
  assert.notEqual(target.key, first.key, 'the file under the linked directory changed');
  const parent = await keyAt(await commit({ 'linked/bin/run.sh': 'echo 2\n' }), {}, 'linked');
  assert.notEqual(parent.key, target.key, 'the file reached through a linked parent changed');
});

test('a context path that is a symlink in the repository: the files it points at are in the key', async () => {
  await commit({
    'docker/Dockerfile': 'FROM busybox\nCOPY x /x\n',
    'services/api/x': 'v1\n',
  });
  await mkdir(join(origin, 'deploy'), { recursive: true });
  await symlink('../services/api', join(origin, 'deploy/api'));
  const first = await keyAt(await commit({}, 'link'), {}, 'deploy/api', 'docker/Dockerfile');
  assert.deepEqual(
    first.inputs.files.map(([path]) => path),
    ['x'],
  );
  const changed = await keyAt(
    await commit({ 'services/api/x': 'v2\n' }),
    {},
    'deploy/api',
    'docker/Dockerfile',
  );
  assert.notEqual(changed.key, first.key);
});

test('a context with a .containerignore: buildah reads it instead of .dockerignore, and so does the key', async () => {
  await commit({
    'ci/Dockerfile': 'FROM busybox\nCOPY . /x\n',
    'ci/.dockerignore': 'skipped\n',
    'ci/.containerignore': 'nothing\n',
    'ci/skipped': 'v1\n',
  });
  const first = await keyAt(git('rev-parse', 'HEAD'), {}, 'ci');
  const changed = await keyAt(await commit({ 'ci/skipped': 'v2\n' }), {}, 'ci');
  assert.notEqual(changed.key, first.key, 'buildah copies the file .dockerignore names');
});

test(".gitattributes that change how the checkout writes a COPY'd file change the key", async () => {
  await commit({ 'ga/Dockerfile': 'FROM busybox\nCOPY run.sh /run.sh\n', 'ga/run.sh': 'echo 1\n' });
  const first = await keyAt(git('rev-parse', 'HEAD'), {}, 'ga');
  const root = await keyAt(await commit({ '.gitattributes': 'run.sh text eol=crlf\n' }), {}, 'ga');
  assert.notEqual(root.key, first.key, 'an attributes file above the context');
  const inside = await keyAt(await commit({ 'ga/.gitattributes': 'run.sh -text\n' }), {}, 'ga');
  assert.notEqual(inside.key, root.key, "an attributes file in the context, not COPY'd itself");
});

test('git sources: branches and HEAD by ls-remote, unknown ones NotFound, paths confined', async () => {
  const head = git('rev-parse', 'HEAD');
  const open = (targetMode: 'remoteHead' | 'remoteBranch', cloneTarget = '') =>
    GitRepo.open(
      join(dir, `git-${n++}`),
      { remoteUri: `file://${origin}`, targetMode, cloneTarget, checkoutLocation: '', fullClone: false },
      { allowFileRemotes: true, timeoutMs: 30_000 },
    );
  assert.equal(await open('remoteHead').resolveCommit(), head);
  assert.equal(await open('remoteBranch', 'main').resolveCommit(), head);
  await assert.rejects(open('remoteBranch', 'nope').resolveCommit(), (e) => errorKind(e) === 'NotFound');
  assert.equal(await open('remoteBranch', 'main').fetch(undefined), head);
  assert.throws(
    () =>
      GitRepo.open(
        dir,
        {
          remoteUri: `file://${origin}`,
          targetMode: 'remoteHead',
          cloneTarget: '',
          checkoutLocation: '',
          fullClone: false,
        },
        { allowFileRemotes: false, timeoutMs: 1000 },
      ),
    (e) => errorKind(e) === 'FailedPrecondition',
  );
  assert.throws(
    () =>
      GitRepo.open(
        dir,
        {
          remoteUri: 'ext::sh -c id',
          targetMode: 'remoteHead',
          cloneTarget: '',
          checkoutLocation: '',
          fullClone: false,
        },
        { allowFileRemotes: true, timeoutMs: 1000 },
      ),
    (e) => errorKind(e) === 'InvalidArgument',
  );
  assert.equal(repoPath('/workspace/repo/app/Dockerfile', 'repo', 'p'), 'app/Dockerfile');
  assert.equal(repoPath('repo', 'repo', 'p'), '');
  assert.throws(
    () => repoPath('../etc/passwd', '', 'p'),
    (e) => errorKind(e) === 'InvalidArgument',
  );
  assert.throws(
    () => repoPath('other/x', 'repo', 'p'),
    (e) => errorKind(e) === 'InvalidArgument',
  );
});

const fixedInputs = async (entries: ContextEntry[]): Promise<BuildInputs> => ({
  dockerfilePath: 'app/Dockerfile',
  contextPath: 'app',
  dockerfile: '0'.repeat(64),
  images: { busybox: `docker.io/library/busybox@sha256:${'1'.repeat(64)}` },
  files: await filesRecord(entries),
  buildArgs: { B: '2', A: '1' },
  remoteSources: ['https://example.com/b', 'https://example.com/a'],
  version: 'v1',
});

// Out of order on purpose: a name JavaScript lists first (`10`), .gitattributes added after the rest.
const fixedEntries: ContextEntry[] = [
  { path: 'src/main.sh', mode: '100755', id: 'a'.repeat(40) },
  { path: 'conf.txt', mode: '100644', id: 'b'.repeat(40) },
  { path: 'link', mode: '120000', id: 'c'.repeat(40) },
  { path: '10', mode: '100644', id: 'd'.repeat(40) },
  { path: '../.gitattributes', mode: '100644', id: 'e'.repeat(40) },
  { path: 'dir/ü "quoted".txt', mode: '100644', id: 'f'.repeat(40) },
];

test('the key of a fixed context is the one keys have always had', async () => {
  const inputs = await fixedInputs(fixedEntries);
  assert.equal(await buildKey(inputs), '63e965df58f0c1571471ae42f181d43906b44c5c11a421c0f1b74962a020d9ae');
  assert.deepEqual(
    inputs.files.map(([path]) => path),
    ['../.gitattributes', '10', 'conf.txt', 'dir/ü "quoted".txt', 'link', 'src/main.sh'],
  );
});

test('a path listed twice is keyed once, with its last id, as keys have always had it', async () => {
  const entries: ContextEntry[] = [
    ...fixedEntries,
    { path: 'src/main.sh', mode: '100644', id: '1'.repeat(40) },
    { path: '../.gitattributes', mode: '100644', id: 'e'.repeat(40) },
    { path: 'conf.txt', mode: '100644', id: '2'.repeat(40) },
  ];
  // The keys the files record as an object (path → last id) gave these entries.
  const twice = await fixedInputs(entries);
  assert.equal(await buildKey(twice), '9a40a07aae1b24d4514285ccccf72b3f1dfde85ba259d9ba192b8f80af1ebd2d');
  assert.deepEqual(
    twice.files.find(([path]) => path === 'conf.txt'),
    ['conf.txt', `100644 ${'2'.repeat(40)}`],
  );
  const reversed = await fixedInputs(entries.slice(3).toReversed());
  assert.equal(await buildKey(reversed), '58bc1e94af1ebc935c72b6961fb2bc2e1fdc9b0537fd255d8e9138c29f5653ba');
  for (const { files } of [twice, reversed]) {
    assert.ok(files.every(([path], i) => i === 0 || (files[i - 1] as readonly [string, string])[0] < path));
  }
});

test('keying a large context lets the event loop run between slices, and stops when cancelled', async () => {
  const entries = Array.from({ length: 100_000 }, (_, i) => ({
    path: `src/m${i % 97}/f${i}.ts`,
    mode: '100644',
    id: i.toString(16).padStart(40, '0'),
  }));
  let done = false;
  let turnBeforeDone = false;
  setImmediate(() => {
    turnBeforeDone = !done;
  });
  const inputs = await fixedInputs(entries);
  const key = await buildKey(inputs);
  done = true;
  assert.ok(turnBeforeDone, 'another callback ran while the key was computed');
  assert.equal(inputs.files.length, entries.length);
  // The order the files come in does not matter: reversed, every name but one is out of place.
  assert.equal(await buildKey(await fixedInputs(entries.toReversed())), key);

  const stop = new AbortController();
  setImmediate(() => stop.abort());
  assert.equal(errorKind(await buildKey(inputs, stop.signal).catch((e: unknown) => e)), 'Aborted');
  const again = new AbortController();
  setImmediate(() => again.abort());
  assert.equal(errorKind(await filesRecord(entries, again.signal).catch((e: unknown) => e)), 'Aborted');
});

/** Two records whose differences exercise what a reason says: every kind of change, more than it names. */
function changedPair(): { before: BuildInputs; now: BuildInputs } {
  const files = (names: string[], id: string) => Object.fromEntries(names.map((n) => [n, `100644 ${id}`]));
  const kept = ['conf.txt', 'src/main.sh'];
  // Out of order on purpose, with names JavaScript lists first (`10`, `9`) and names whose UTF-16 order
  // is not their code points' order (an astral character before U+FF01).
  const modified = ['src/z.ts', '10', 'Src/A.ts', '9', 'src/ä.ts', 'src/a b.ts', 'src/a.ts'];
  const added = ['new/2', 'new/10', 'New/x', 'new/é', 'new/1', 'new/~'];
  const removed = ['old/b', 'old/a', '0', 'Old', 'old/\u{1F600}', 'old/\uFF01'];
  return {
    before: {
      dockerfilePath: 'app/Dockerfile',
      contextPath: 'app',
      dockerfile: '0'.repeat(64),
      images: {
        busybox: `docker.io/library/busybox@sha256:${'1'.repeat(64)}`,
        alpine: `docker.io/library/alpine@sha256:${'2'.repeat(64)}`,
      },
      files: fileIdsOf({ ...files(removed, 'a'), ...files(modified, 'a'), ...files(kept, 'a') }),
      buildArgs: { B: '2', A: '1' },
      remoteSources: ['https://example.com/b', 'https://example.com/a'],
      version: 'v1',
    },
    now: {
      dockerfilePath: 'Dockerfile',
      contextPath: '',
      dockerfile: '1'.repeat(64),
      images: {
        'tools:2': `reg.example/tools@sha256:${'3'.repeat(64)}`,
        busybox: `docker.io/library/busybox@sha256:${'4'.repeat(64)}`,
      },
      files: fileIdsOf({ ...files(kept, 'a'), ...files(added, 'b'), ...files(modified.toReversed(), 'b') }),
      buildArgs: { A: '1', C: '3' },
      remoteSources: ['https://example.com/a'],
      version: 'v2',
      platform: 'linux/amd64',
    },
  };
}

test('what changed since the last build is said as it always was', async () => {
  const { before, now } = changedPair();
  // What the synchronous comparison said of this pair, before it was sliced.
  assert.deepEqual(await describeChanges(before, now), [
    'Dockerfile path changed from app/Dockerfile to Dockerfile',
    'context path changed from app to ',
    'the Dockerfile changed',
    'dockerfile_version changed from "v1" to "v2"',
    'platform changed from none to linux/amd64',
    'base image alpine no longer used',
    `base image busybox moved from sha256:${'1'.repeat(64)} to sha256:${'4'.repeat(64)}`,
    `new base image tools:2 (reg.example/tools@sha256:${'3'.repeat(64)})`,
    'context files changed: modified 10, 9, Src/A.ts, src/a b.ts, src/a.ts and 2 more; added New/x, new/1, new/10, new/2, new/~ and 1 more; removed 0, Old, old/a, old/b, old/\u{1F600} and 1 more',
    'build args changed: B, C',
    'remote ADD sources changed',
  ]);
  assert.deepEqual(await describeChanges(before, before), []);
});

test('comparing large records lets the event loop run between slices, and stops when cancelled', async () => {
  const entries = Array.from({ length: 100_000 }, (_, i) => ({
    path: `src/m${i % 97}/f${i}.ts`,
    mode: '100644',
    id: i.toString(16).padStart(40, '0'),
  }));
  const before = await fixedInputs(entries);
  const now = await fixedInputs(entries.map((e, i) => (i % 3 === 0 ? { ...e, id: 'f'.repeat(40) } : e)));
  let done = false;
  let turnBeforeDone = false;
  setImmediate(() => {
    turnBeforeDone = !done;
  });
  const changes = await describeChanges(before, now);
  done = true;
  assert.ok(turnBeforeDone, 'another callback ran while the records were compared');
  const modified = entries.flatMap((e, i) => (i % 3 === 0 ? [e.path] : [])).sort();
  assert.deepEqual(changes, [
    `context files changed: modified ${modified.slice(0, 5).join(', ')} and ${modified.length - 5} more`,
  ]);

  const stop = new AbortController();
  setImmediate(() => stop.abort());
  assert.equal(
    errorKind(await describeChanges(before, now, stop.signal).catch((e: unknown) => e)),
    'Aborted',
  );
});
