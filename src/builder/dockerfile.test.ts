// biome-ignore-all lint/suspicious/noTemplateCurlyInString: the strings are Dockerfile text, whose variables look like template placeholders
import assert from 'node:assert/strict';
import { after, test } from 'node:test';
import { errorKind } from '../errors.ts';
import { SourceRules, selectContextFiles } from './context-files.ts';
import {
  analyzeDockerfile,
  cleanSourcePath,
  type DockerfileAnalysis,
  expandVariables,
  MAX_DOCKERFILE_BYTES,
  pinImages,
} from './dockerfile.ts';
import { DockerfileAnalyzer } from './dockerfile-analyzer.ts';

const analyzer = new DockerfileAnalyzer();
after(() => analyzer.close());

/** An error as plain data, to compare the two ways of analysing. */
const plain = (err: unknown) => ({ kind: errorKind(err), message: String(err) });

/**
 * analyzeDockerfile's answer here, once the builder's worker thread has given the same answer or error
 * for the same Dockerfile and build args.
 */
async function analyze(text: string, buildArgs?: ReadonlyMap<string, string>): Promise<DockerfileAnalysis> {
  const there = await analyzer.analyze(text, buildArgs).then((analysis) => ({ analysis }), plain);
  let analysis: DockerfileAnalysis;
  try {
    analysis = analyzeDockerfile(text, buildArgs);
  } catch (err) {
    assert.deepEqual(there, plain(err));
    throw err;
  }
  assert.deepEqual(there, { analysis });
  return analysis;
}

test('FROM images: global ARGs, build args over their defaults, stage names and scratch left out', async () => {
  const text = [
    'ARG BASE=busybox',
    'ARG TAG=1.0',
    'ARG REG',
    'FROM ${BASE}:${TAG} AS build',
    'RUN echo hi',
    'FROM --platform=linux/amd64 build',
    'COPY --from=build /a /b',
    'COPY --from=reg.example:5000/tools/x:2 /x /x',
    'FROM scratch',
    'FROM ${REG:-docker.io}/library/alpine',
  ].join('\n');
  const a = await analyze(text);
  assert.deepEqual(
    a.images.map((u) => u.image),
    ['busybox:1.0', 'reg.example:5000/tools/x:2', 'docker.io/library/alpine'],
  );
  const b = await analyze(
    text,
    new Map([
      ['TAG', '2.0'],
      ['REG', 'mirror.local'],
    ]),
  );
  assert.deepEqual(
    b.images.map((u) => u.image),
    ['busybox:2.0', 'reg.example:5000/tools/x:2', 'mirror.local/library/alpine'],
  );
  // A build arg no global ARG declares does not reach FROM (Docker's rule).
  assert.deepEqual(
    (await analyze('FROM ${X:-busybox}\n', new Map([['X', 'alpine']]))).images[0]?.image,
    'busybox',
  );
});

test('stage names match case-insensitively, numeric stage references are not images', async () => {
  const a = await analyze('FROM busybox AS Builder\nFROM builder\nCOPY --from=0 /a /a\n');
  assert.deepEqual(
    a.images.map((u) => u.image),
    ['busybox'],
  );
});

test('context sources: COPY/ADD paths cleaned; variables and RUN --mount read everything', async () => {
  const a = await analyze(
    'FROM busybox\nCOPY ./src/ /app/\nADD ["a b.txt", "/x"]\nCOPY --chown=1:1 *.json lib/../conf /y/\nADD https://example.com/f /f\n',
  );
  assert.deepEqual(a.contextSources, ['*.json', 'a b.txt', 'conf', 'src']);
  assert.deepEqual(a.remoteSources, ['https://example.com/f']);
  assert.equal((await analyze('FROM busybox\nARG D\nCOPY $D /x\n')).contextSources, 'all');
  assert.equal((await analyze('FROM busybox\nRUN --mount=type=bind,target=/m true\n')).contextSources, 'all');
  assert.deepEqual((await analyze('FROM busybox\nCOPY . /app\n')).contextSources, ['']);
});

test('bad Dockerfiles are InvalidArgument', async () => {
  assert.equal(errorKind(await rejection(analyze('RUN true\n'))), 'InvalidArgument');
  assert.equal(errorKind(await rejection(analyze('FROM $NOPE\n'))), 'InvalidArgument');
});

test('pinImages replaces exactly the image text, keeping flags and stage names', async () => {
  const text = 'ARG T=1\nFROM --platform=linux/amd64 busybox:${T} AS b\nCOPY --from=tools:2 /x /x\nFROM b\n';
  const a = await analyze(text);
  const pinned = pinImages(text, a.images, (i) => `${i.split(':')[0]}@sha256:abc`);
  assert.equal(
    pinned,
    'ARG T=1\nFROM --platform=linux/amd64 busybox@sha256:abc AS b\nCOPY --from=tools@sha256:abc /x /x\nFROM b\n',
  );
});

test('expandVariables and cleanSourcePath', () => {
  const vars = new Map([
    ['A', 'x'],
    ['E', ''],
  ]);
  assert.equal(expandVariables('$A-${A}-${B:-d}-${A:+y}-${E:-z}-${B}', vars), 'x-x-d-y-z-');
  assert.equal(cleanSourcePath('./a//b/./c/'), 'a/b/c');
  assert.equal(cleanSourcePath('/abs/../x'), 'x');
});

test('source matcher: Go globs per component, directories include what is under them', async () => {
  const rules = await SourceRules.compile(['src', '*.json', 'conf/a?.y[ae]ml', 'esc/a\\*b', 'esc/\\d']);
  assert.ok(rules);
  const m = (path: string) => rules.reads(path);
  assert.ok(m('src/a/b.ts'));
  assert.ok(m('package.json'));
  assert.ok(!m('sub/package.json'));
  assert.ok(m('conf/ab.yaml'));
  assert.ok(!m('conf/abc.yaml'));
  assert.ok(!m('srcx/y'));
  // A backslash makes the next character itself, as in Go's filepath.Match.
  assert.ok(m('esc/a*b') && !m('esc/axb'));
  assert.ok(m('esc/d') && !m('esc/1'));
  assert.equal(await SourceRules.compile(['']), undefined, 'the whole context');
});

test('selectContextFiles honours .dockerignore with exceptions', async () => {
  const e = (path: string) => ({ path, mode: '100644', id: path });
  const files = [e('a.md'), e('README.md'), e('node_modules/x.js'), e('src/b.ts'), e('src/b.test.ts')];
  const got = await selectContextFiles(files, {
    ignorePatterns: ['*.md', '!README.md', 'node_modules', '**/*.test.ts'],
    sources: 'all',
  });
  assert.deepEqual(
    got.map((f) => f.path),
    ['README.md', 'src/b.ts'],
  );
});

async function rejection(p: Promise<unknown>): Promise<unknown> {
  return p.then(
    () => assert.fail('expected a rejection'),
    (err: unknown) => err,
  );
}

test('an image a RUN --mount reads (from=) is pinned and keyed like COPY --from', async () => {
  const text =
    'FROM busybox AS b\nRUN --mount=type=bind,from=alpine:3,target=/m --mount=type=cache,target=/c,from=b cat /m/x\n';
  const a = await analyze(text);
  assert.deepEqual(
    a.images.map((u) => u.image),
    ['busybox', 'alpine:3'],
  );
  assert.equal(a.contextSources, 'all');
  assert.equal(
    pinImages(text, a.images, (i) => `${i.split(':')[0]}@sha256:abc`),
    'FROM busybox@sha256:abc AS b\nRUN --mount=type=bind,from=alpine@sha256:abc,target=/m --mount=type=cache,target=/c,from=b cat /m/x\n',
  );
});

test('a Dockerfile over 256 KiB is refused before it is parsed', async () => {
  const at = (bytes: number) => `FROM busybox\n${'#'.repeat(bytes - 14)}\n`;
  assert.equal(Buffer.byteLength(at(256 << 10)), 256 << 10);
  assert.deepEqual((await analyze(at(256 << 10))).images.length, 1);
  const err = await rejection(analyze(at((256 << 10) + 1)));
  assert.equal(errorKind(err), 'InvalidArgument');
  assert.match(String(err), /Dockerfile is larger than 262144 bytes/);
});

test('an instruction with tens of thousands of flags is read right: its flags are not its arguments', async () => {
  const flags = '--chown=1:1 '.repeat(Math.floor((MAX_DOCKERFILE_BYTES - 64) / 12));
  const a = await analyze(`FROM --platform=linux/arm64 busybox\nCOPY ${flags}src conf /app/\n`);
  assert.deepEqual(a.contextSources, ['conf', 'src']);
  assert.deepEqual(a.images, [
    { image: 'busybox', range: { line: 0, start: 28, end: 35 }, platform: 'linux/arm64' },
  ]);
});

test('variables that double at each ARG are refused once they expand past the bound', async () => {
  const text = `ARG A=x\n${'ARG A=$A$A\n'.repeat(30)}FROM busybox:$A\n`;
  const err = await rejection(analyze(text));
  assert.equal(errorKind(err), 'InvalidArgument');
  assert.match(String(err), /variables expand to more than/);
  // Within the bound they expand as before.
  const ok = await analyze(`ARG A=x\n${'ARG A=$A$A\n'.repeat(4)}FROM busybox:$A\n`);
  assert.equal(ok.images[0]?.image, `busybox:${'x'.repeat(16)}`);
});
