// The builder's reading of an ignore file against buildah's own: a context with a .dockerignore of many
// kinds of patterns is copied whole by buildah (`COPY . /ctx/`), and the files it copied are the files
// selectContextFiles keeps. The build key hashes these, so one buildah copies and the key leaves out
// would let a changed file reuse a stale image.
import assert from 'node:assert/strict';
import { lstat, mkdir, readdir, writeFile } from 'node:fs/promises';
import { dirname, join, relative } from 'node:path';
import { test } from 'node:test';
import { dockerignorePatterns, selectContextFiles } from '../../src/builder/context-files.ts';
import { imageTools } from '../helpers/images.ts';

const IGNORE = [
  '# a comment',
  '*.log',
  '!important.log',
  '/build/',
  '**/node_modules',
  'docs/**/*.md',
  '!docs/keep/**',
  'src/*/gen-?.ts',
  'tmp*',
  '**/.cache',
  '[Tt]humbs.db',
  'a+b',
  'secret/**',
  '!secret/public.txt',
  'UPPER',
  'vendor/lib',
  '\\#hash',
  ' spaced ',
  'x/../y',
  '\uFEFFbomfile',
  '\u0085nelfile',
  '',
].join('\n');

const FILES = [
  'app.log',
  'important.log',
  'sub/deep.log',
  'build/out.bin',
  'buildx/out.bin',
  'node_modules/x.js',
  'pkg/node_modules/y.js',
  'docs/a.md',
  'docs/guide/b.md',
  'docs/keep/c.md',
  'docs/readme.txt',
  'src/core/gen-1.ts',
  'src/core/gen-12.ts',
  'src/core/main.ts',
  'tmpfile',
  'tmpdir/x',
  'other/tmp.txt',
  '.cache/c',
  'lib/.cache/d',
  'Thumbs.db',
  'thumbs.db',
  'aab',
  'a+b',
  'secret/key.pem',
  'secret/public.txt',
  'upper',
  'UPPER/file',
  'vendor/lib/z.go',
  'vendor/libx/w.go',
  '#hash',
  ' spaced ',
  'spaced',
  'y',
  'README.md',
  'bomfile',
  'nelfile',
];

async function filesUnder(root: string): Promise<string[]> {
  const out: string[] = [];
  for (const e of await readdir(root, { recursive: true, withFileTypes: true })) {
    const full = join(e.parentPath, e.name);
    if (!(await lstat(full)).isDirectory()) out.push(relative(root, full));
  }
  return out.sort();
}

test('the files buildah copies from a context with a .dockerignore are the files the key counts', async (t) => {
  const tools = await imageTools();
  t.after(() => tools.cleanup());
  const context = join(tools.dir, 'context');
  for (const f of FILES) {
    await mkdir(dirname(join(context, f)), { recursive: true });
    await writeFile(join(context, f), `${f}\n`);
  }
  await writeFile(join(context, '.dockerignore'), IGNORE);
  const dockerfile = join(tools.dir, 'Dockerfile');
  await writeFile(dockerfile, 'FROM scratch\nCOPY . /ctx/\n');
  await tools.buildah([
    'build',
    '--isolation',
    'chroot',
    '-q',
    '-f',
    dockerfile,
    '-t',
    'context-oracle',
    context,
  ]);
  const container = (await tools.buildah(['from', 'context-oracle'])).trim();
  const mount = (await tools.buildah(['mount', container])).trim();
  const copied = await filesUnder(join(mount, 'ctx'));
  await tools.buildah(['umount', container]);
  await tools.buildah(['rm', container]);

  const entries = (await filesUnder(context)).map((path) => ({ path, mode: '100644', id: path }));
  const selected = await selectContextFiles(entries, {
    ignorePatterns: dockerignorePatterns(IGNORE),
    sources: 'all',
  });
  assert.deepEqual(
    selected.map((e) => e.path),
    copied,
  );
  // The patterns did something: the comparison is not between two whole contexts.
  assert.ok(copied.length < entries.length / 2 && copied.includes('secret/public.txt'), copied.join(' '));
});
