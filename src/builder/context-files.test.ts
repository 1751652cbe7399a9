// The context selection's matching: the fast paths (plain paths looked up by prefix, wildcards tried from
// the last, skipped without their required text) decide as rule-by-rule matching would; a hostile ignore
// file is refused or costs a bounded time; the work gives the event loop turns and can be cancelled.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import fc from 'fast-check';
import { errorKind } from '../errors.ts';
import {
  type ContextEntry,
  dockerignorePatterns,
  IgnoreRules,
  MAX_WILDCARD_PATTERNS,
  selectContextFiles,
} from './context-files.ts';

const entry = (path: string): ContextEntry => ({ path, mode: '100644', id: path });
const paths = (entries: ContextEntry[]) => entries.map((e) => e.path);

test('the ignore file is read and applied as buildah 1.28 does: case matters, regular-expression characters stay', async () => {
  // What `buildah build` copied of this context for `COPY . /ctx/`.
  const files = [
    '.dockerignore',
    'Dockerfile',
    'Docs/x.txt',
    'README.md',
    'c+d.txt',
    'ccd.txt',
    'keep.txt',
    'notes.MD',
    'sub/a.tmp',
    'sub/deep/b.tmp',
  ].map(entry);
  const patterns = dockerignorePatterns('*.MD\n**/*.tmp\n!sub/deep/b.tmp\ndocs\nc+d.txt\n');
  assert.deepEqual(paths(await selectContextFiles(files, { ignorePatterns: patterns, sources: 'all' })), [
    '.dockerignore',
    'Dockerfile',
    'Docs/x.txt',
    'README.md',
    'c+d.txt',
    'keep.txt',
    'sub/deep/b.tmp',
  ]);
  // A byte-order mark (a file saved on Windows) and a NEL are no part of the pattern either.
  const marked = await IgnoreRules.compile(dockerignorePatterns('\uFEFFfoo\n\u0085bar\n'));
  assert.ok(marked.ignores('foo') && marked.ignores('bar'));
  assert.deepEqual(dockerignorePatterns('# note\n/dist/\n\n  # not a comment\r\n!/dist/keep\n'), [
    'dist',
    '  # not a comment\r',
    '!/dist/keep',
  ]);
});

// Paths and patterns of a few names, so that they meet often.
const name = fc.constantFrom('a', 'b', 'ab', 'a.b', 'x');
const pathArb = fc.array(name, { minLength: 1, maxLength: 4 }).map((p) => p.join('/'));
const segment = fc.constantFrom('a', 'b', 'ab', 'a.b', 'x', '*', '?', '**', 'a*', '*.b', '[ab]', 'a?');
const patternArb = fc
  .tuple(fc.boolean(), fc.array(segment, { minLength: 1, maxLength: 3 }))
  .map(([keep, segs]) => `${keep ? '!' : ''}${segs.join('/')}`);

test('rules together decide as each rule alone, taken in order with the last match deciding', async () => {
  await fc.assert(
    fc.asyncProperty(
      fc.array(patternArb, { maxLength: 12 }),
      fc.array(pathArb, { maxLength: 10 }),
      async (patterns, ps) => {
        const all = await IgnoreRules.compile(patterns);
        const alone = await Promise.all(patterns.map((p) => IgnoreRules.compile([p.replace(/^!/, '')])));
        for (const path of ps) {
          let ignored = false;
          patterns.forEach((p, i) => {
            if ((alone[i] as IgnoreRules).ignores(path)) ignored = !p.startsWith('!');
          });
          assert.equal(all.ignores(path), ignored, `${JSON.stringify(patterns)} on ${path}`);
        }
      },
    ),
    { numRuns: 2000 },
  );
});

test('a plain path decides as the same path written as a wildcard pattern would', async () => {
  await fc.assert(
    fc.asyncProperty(fc.array(name, { minLength: 1, maxLength: 3 }), pathArb, async (segs, path) => {
      const plain = segs.join('/');
      // `[a]` is `a`, but takes the regular-expression path.
      const twin = plain.replace(/[a-z]$/, (c) => `[${c}]`);
      const [p, w] = await Promise.all([IgnoreRules.compile([plain]), IgnoreRules.compile([twin])]);
      assert.equal(p.ignores(path), w.ignores(path), `${plain} / ${twin} on ${path}`);
    }),
    { numRuns: 2000 },
  );
});

test(`more than ${MAX_WILDCARD_PATTERNS} wildcard patterns are refused, saying so; plain paths cost no test and are not counted`, async () => {
  const wild = (n: number) => Array.from({ length: n }, (_, i) => `**/gen${i}-*`);
  await IgnoreRules.compile(wild(MAX_WILDCARD_PATTERNS));
  const err = await IgnoreRules.compile(wild(MAX_WILDCARD_PATTERNS + 1)).catch((e: unknown) => e);
  assert.equal(errorKind(err), 'InvalidArgument');
  assert.match(
    (err as Error).message,
    new RegExp(
      `has ${MAX_WILDCARD_PATTERNS + 1} patterns with wildcards; this builder takes at most ${MAX_WILDCARD_PATTERNS}`,
    ),
  );

  const plain = Array.from({ length: 10_000 }, (_, i) => `dir${i}/file`);
  const rules = await IgnoreRules.compile([
    ...plain,
    '!dir7/file',
    'dir7/file/x',
    ...wild(MAX_WILDCARD_PATTERNS),
  ]);
  assert.ok(rules.ignores('dir9999/file'));
  assert.ok(rules.ignores('dir5/file/under/it'));
  assert.ok(!rules.ignores('dir7/file'), 'a later ! rule keeps it');
  assert.ok(rules.ignores('dir7/file/x/y'));
  assert.ok(!rules.ignores('dir5/other'));
  assert.ok(rules.ignores('deep/gen3-z'));
});

test('patterns buildah refuses fail the selection as buildah would fail the build', async () => {
  for (const bad of ['!', 'a\\', 'x[', 'c++']) {
    const err = await IgnoreRules.compile([bad]).catch((e: unknown) => e);
    assert.equal(errorKind(err), 'InvalidArgument', bad);
  }
});

test('a pattern a backtracking engine takes minutes over is matched in linear time', {
  timeout: 60_000,
}, async () => {
  // `**/` twelve times over a path 25 directories deep: JavaScript's RegExp needed a minute for one test.
  const rules = await IgnoreRules.compile([`${'**/'.repeat(12)}y`, `${'*a'.repeat(12)}b`]);
  assert.equal(rules.ignores(`${'a/'.repeat(25)}x`), false);
  assert.equal(rules.ignores('a'.repeat(40)), false);
  assert.equal(rules.ignores(`${'a/'.repeat(25)}y`), true);
});

test('a large selection lets the event loop run between slices, and stops when cancelled', async () => {
  const entries = Array.from({ length: 100_000 }, (_, i) => entry(`src/m${i % 97}/f${i}.ts`));
  const patterns = Array.from({ length: 64 }, (_, i) => `**/m${i}*/*.js`);
  let done = false;
  let turnBeforeDone = false;
  setImmediate(() => {
    turnBeforeDone = !done;
  });
  const got = await selectContextFiles(entries, { ignorePatterns: patterns, sources: 'all' });
  done = true;
  assert.equal(got.length, entries.length);
  assert.ok(turnBeforeDone, 'another callback ran while the selection was under way');

  const stop = new AbortController();
  setImmediate(() => stop.abort());
  const err = await selectContextFiles(
    entries,
    { ignorePatterns: patterns, sources: 'all' },
    stop.signal,
  ).catch((e: unknown) => e);
  assert.equal(errorKind(err), 'Aborted');
});
