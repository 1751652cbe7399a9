import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { createHash } from 'node:crypto';
import fsp, { readdir, readFile, truncate, utimes, writeFile } from 'node:fs/promises';
import { syncBuiltinESMExports } from 'node:module';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import { pino } from 'pino';
import { removeTempDir, tempDir } from '../../test/helpers/tmp.ts';
import { errorKind } from '../errors.ts';
import { type BuildInputs, describeChanges, fileIdsOf, filesRecord } from './build-key.ts';
import { type HistoryEntry, SourceHistory } from './source-history.ts';

let dir: string;
before(async () => {
  dir = await tempDir('source-history');
});
after(() => removeTempDir(dir));

let n = 0;
/** A history in a directory of its own, with the messages it logs. */
function history(): { h: SourceHistory; dir: string; logged: string[] } {
  const logged: string[] = [];
  const logger = pino({ level: 'info' }, { write: (line: string) => logged.push(JSON.parse(line).msg) });
  const d = join(dir, `h${n++}`);
  return { h: new SourceHistory(d, logger), dir: d, logged };
}

const inputs = (files: Record<string, string>): BuildInputs => ({
  dockerfilePath: 'app/Dockerfile',
  contextPath: 'app',
  dockerfile: '0'.repeat(64),
  images: { busybox: `docker.io/library/busybox@sha256:${'1'.repeat(64)}` },
  files: fileIdsOf(files),
  buildArgs: { B: '2', A: '1' },
  remoteSources: ['https://example.com/b'],
  version: 'v1',
});

// Names a line-oriented file must carry whole: a newline, quotes, a lone surrogate (a name that is not
// UTF-8, see byte-names), an astral character, a name JavaScript lists first.
const odd = {
  'a\nb': '100644 1',
  'say "hi".txt': '100644 2',
  'bad-\uDC80-byte': '100644 3',
  'emoji/\u{1F600}': '100644 4',
  '10': '100644 5',
  'x\u2028y': '120000 6',
};

/** The file the builder's previous history wrote for `source`: the whole entry as one JSON text. */
async function writePrevious(d: string, source: string, entry: object): Promise<void> {
  const name = `${createHash('sha256').update(source).digest('hex')}.json`;
  await writeFile(join(d, name), JSON.stringify(entry));
}

test('an entry reads back as it was recorded, names and all; a reference source has its key alone', async () => {
  const { h, dir: d } = history();
  assert.equal(await h.get('src'), undefined);
  const entry: HistoryEntry = {
    key: 'k1',
    inputs: { ...inputs(odd), platform: 'linux/amd64' },
    builtAt: 1700,
  };
  await h.put('src', entry);
  assert.deepEqual(await h.get('src'), entry);
  await h.put('ref', { key: 'reg.example/base:1', builtAt: 1800 });
  assert.deepEqual(await h.get('ref'), { key: 'reg.example/base:1', builtAt: 1800 });
  const empty: HistoryEntry = { key: 'k0', inputs: inputs({}), builtAt: 1 };
  await h.put('empty', empty);
  assert.deepEqual(await h.get('empty'), empty);
  // A later build replaces the record; nothing is left beside the records.
  await h.put('src', { ...entry, key: 'k2' });
  assert.equal((await h.get('src'))?.key, 'k2');
  assert.equal((await readdir(d)).filter((f) => !f.endsWith('.jsonl')).length, 0);
});

test('head gives an entry without its files, from the record’s first line alone', async () => {
  const { h, dir: d } = history();
  assert.equal(await h.head('src'), undefined);
  const { files: _, ...rest } = inputs(odd);
  await h.put('src', { key: 'k1', inputs: inputs(odd), builtAt: 1700 });
  await h.put('ref', { key: 'reg.example/base:1', builtAt: 1800 });
  assert.deepEqual(await h.head('src'), { key: 'k1', inputs: rest, builtAt: 1700 });
  assert.deepEqual(await h.head('ref'), { key: 'reg.example/base:1', builtAt: 1800 });
  // Its file lines are not read: broken, they fail get, not head.
  const path = join(d, `${createHash('sha256').update('src').digest('hex')}.jsonl`);
  const [header] = (await readFile(path, 'utf8')).split('\n');
  await writeFile(path, `${header}\n[oops\n`);
  assert.equal(await h.get('src'), undefined);
  assert.deepEqual(await h.head('src'), { key: 'k1', inputs: rest, builtAt: 1700 });
  // A record in the previous format: without its files too.
  await writePrevious(d, 'old', { key: 'k-old', inputs: { ...rest, files: odd }, builtAt: 1600 });
  assert.deepEqual(await h.head('old'), { key: 'k-old', inputs: rest, builtAt: 1600 });
});

test('a record in the previous format is read, and the reason it gives is the one it gave', async () => {
  const { h, dir: d, logged } = history();
  const before = { ...odd, 'gone.txt': '100644 7', 'same.txt': '100644 8' };
  const { '10': _ten, ...kept } = odd;
  const now = { ...kept, 'a\nb': '100644 9', 'new.txt': '100644 a', 'same.txt': '100644 8' };
  const { files: _, ...rest } = inputs({});
  await h.put('other', { key: 'k', builtAt: 1 }); // the directory exists, as it did
  await writePrevious(d, 'src', { key: 'k-old', inputs: { ...rest, files: before }, builtAt: 1600 });
  await writePrevious(d, 'ref', { key: 'reg.example/base:1', builtAt: 1650 });
  const read = await h.get('src');
  assert.deepEqual(read, { key: 'k-old', inputs: inputs(before), builtAt: 1600 });
  assert.deepEqual(await h.get('ref'), { key: 'reg.example/base:1', builtAt: 1650 });
  assert.deepEqual(await describeChanges(read?.inputs as BuildInputs, inputs(now)), [
    'context files changed: modified a\nb; added new.txt; removed 10, gone.txt',
  ]);
  assert.deepEqual(logged, []);
  // The next build's record replaces the previous format's file.
  await h.put('src', { key: 'k-new', inputs: inputs(now), builtAt: 1700 });
  assert.equal((await h.get('src'))?.key, 'k-new');
  assert.deepEqual((await readdir(d)).filter((f) => f.endsWith('.json')).length, 1, 'the reference source’s');
});

test('a large record in the previous format gives its key and time without being parsed whole', async () => {
  const { h, dir: d, logged } = history();
  const files = Object.fromEntries(
    Array.from({ length: 10_000 }, (_, i) => [`src/f${i}.ts`, `100644 ${String(i).padStart(40, '0')}`]),
  );
  const { files: _, ...rest } = inputs({});
  await h.put('other', { key: 'k', builtAt: 1 });
  await writePrevious(d, 'src', { key: 'say "k"', inputs: { ...rest, files }, builtAt: 1600 });
  assert.deepEqual(await h.get('src'), { key: 'say "k"', builtAt: 1600 });
  assert.equal(logged.length, 1);
  assert.match(logged[0] as string, /previous format, too large/);
});

test('a record that cannot be read as written counts as none, with a log line', async () => {
  const { h, dir: d, logged } = history();
  await h.put('src', { key: 'k', inputs: inputs(odd), builtAt: 1 });
  const [name] = await readdir(d);
  const path = join(d, name as string);
  const good = await readFile(path, 'utf8');
  const lines = good.split('\n');
  const cases = {
    'a later format': good.replace('"format":2', '"format":3'),
    'cut short': lines.slice(0, -2).join('\n'),
    'a line cut': good.slice(0, -3),
    'files out of order': [lines[0], lines[2], lines[1], ...lines.slice(3)].join('\n'),
    'not JSON': `${lines[0]}\n[oops\n`,
  };
  for (const [what, text] of Object.entries(cases)) {
    await writeFile(path, text);
    logged.length = 0;
    assert.equal(await h.get('src'), undefined, what);
    assert.equal(logged.length, 1, what);
  }
});

test('reading and writing a large record lets the event loop turn, and stops when cancelled', async () => {
  const { h, dir: d } = history();
  const entries = Array.from({ length: 100_000 }, (_, i) => ({
    path: `src/m${i % 97}/f${i}.ts`,
    mode: '100644',
    id: i.toString(16).padStart(40, '0'),
  }));
  const entry: HistoryEntry = {
    key: 'k',
    inputs: { ...inputs({}), files: await filesRecord(entries) },
    builtAt: 1,
  };
  // The file's reads and writes turn the loop whatever is done between them, so what a turn sees is
  // counted instead: how far the JSON work had got. In one JSON step, turns saw none or all of it.
  const stagesSeen = async (method: 'parse' | 'stringify', work: () => Promise<unknown>) => {
    const original = JSON[method];
    let calls = 0;
    const seen = new Set<number>();
    let running = true;
    const turn = () => {
      if (!running) return;
      seen.add(calls);
      setImmediate(turn);
    };
    Object.assign(JSON, {
      [method]: (...args: unknown[]) => {
        calls++;
        return Reflect.apply(original, JSON, args);
      },
    });
    setImmediate(turn);
    try {
      await work();
    } finally {
      running = false;
      Object.assign(JSON, { [method]: original });
    }
    return seen.size;
  };
  assert.ok((await stagesSeen('stringify', () => h.put('src', entry))) >= 10);
  let read: HistoryEntry | undefined;
  assert.ok((await stagesSeen('parse', async () => (read = await h.get('src')))) >= 10);
  assert.deepEqual(read, entry);

  const stopRead = new AbortController();
  setImmediate(() => stopRead.abort());
  assert.equal(errorKind(await h.get('src', stopRead.signal).catch((e: unknown) => e)), 'Aborted');
  // A cancelled write leaves the record before it, and no temp file.
  const stopWrite = new AbortController();
  setImmediate(() => stopWrite.abort());
  const changed = { ...entry, key: 'k2' };
  assert.equal(errorKind(await h.put('src', changed, stopWrite.signal).catch((e: unknown) => e)), 'Aborted');
  assert.equal((await h.get('src'))?.key, 'k');
  assert.equal((await readdir(d)).length, 1);
});

test('writes of one source go one after another: the last one asked for is the record', async () => {
  const { h } = history();
  const big = (key: string): HistoryEntry => ({
    key,
    inputs: inputs(Object.fromEntries(Array.from({ length: 20_000 }, (_, i) => [`f${i}`, `100644 ${key}`]))),
    builtAt: 1,
  });
  await Promise.all([h.put('src', big('a')), h.put('src', big('b')), h.put('src', big('c'))]);
  assert.deepEqual(await h.get('src'), big('c'));
});

// A builder killed mid-write (OOM, SIGKILL, a node crash): its temp file must not outlive it.
const KILLED_MID_WRITE = `
const { readdirSync } = await import('node:fs');
const { pino } = await import('pino');
const { SourceHistory } = await import(process.argv[1]);
const dir = process.argv[2];
const h = new SourceHistory(dir, pino({ enabled: false }));
const files = Array.from({ length: 50000 }, (_, i) => ['f' + String(i).padStart(6, '0'), '100644 ' + 'a'.repeat(40)]);
const check = () => {
  if (readdirSync(dir).some((n) => n.endsWith('.tmp'))) process.kill(process.pid, 'SIGKILL');
  else setImmediate(check);
};
setImmediate(check);
await h.put('src', { key: 'new', inputs: { dockerfilePath: 'Dockerfile', contextPath: '', dockerfile: '', images: {}, files, buildArgs: {}, remoteSources: [], version: '' }, builtAt: 2 });
process.exit(3);
`;

test('a write cut by the end of its process leaves the record before it, and its temp file is removed', async () => {
  const { h: first, dir: d } = history();
  const before: HistoryEntry = { key: 'old', builtAt: 1 };
  await first.put('src', before);
  const ended = await new Promise<{ code: number | null; signal: string | null }>((resolve) => {
    const child = execFile(process.execPath, [
      '--disable-warning=ExperimentalWarning',
      '--input-type=module',
      '-e',
      KILLED_MID_WRITE,
      new URL('./source-history.ts', import.meta.url).href,
      d,
    ]);
    child.on('exit', (code, signal) => resolve({ code, signal }));
  });
  assert.deepEqual(ended, { code: null, signal: 'SIGKILL' }, 'the writer was ended while it wrote');
  assert.ok(
    (await readdir(d)).some((name) => name.endsWith('.tmp')),
    'it left its temp file',
  );

  // The next builder on this state directory.
  const h = new SourceHistory(d, pino({ enabled: false }));
  assert.deepEqual(await h.get('src'), before);
  await h.put('other', { key: 'k', builtAt: 3 });
  assert.deepEqual(
    (await readdir(d)).filter((name) => name.endsWith('.tmp')),
    [],
    'no temp file is left from the write that was cut',
  );
});

/**
 * Runs `fn` with node:fs/promises' stat (as source-history imports it) wrapped: `before` runs ahead of
 * each call; the answer is the most calls that were under way at once.
 */
async function watchingStat(
  fn: () => Promise<void>,
  before: (path: string) => Promise<void> = async () => {},
) {
  const { stat } = fsp;
  let running = 0;
  let most = 0;
  fsp.stat = (async (path: string, options?: object) => {
    running++;
    most = Math.max(most, running);
    try {
      await before(path);
      return await stat(path, options);
    } finally {
      running--;
    }
  }) as typeof fsp.stat;
  syncBuiltinESMExports();
  try {
    await fn();
  } finally {
    fsp.stat = stat;
    syncBuiltinESMExports();
  }
  return most;
}

/** A history over `max` sources holding `old` records older than any it writes. */
async function crowded(max: number, old: number) {
  const logged: string[] = [];
  const logger = pino({ level: 'info' }, { write: (line: string) => logged.push(JSON.parse(line).msg) });
  const d = join(dir, `h${n++}`);
  const h = new SourceHistory(d, logger, max);
  await h.put('first', { key: 'k', builtAt: 0 });
  for (let i = 0; i < old; i++) {
    const p = join(d, `${String(i).padStart(64, '0')}.json`);
    await writeFile(p, '{}');
    await utimes(p, 1000 + i, 1000 + i);
  }
  // Writes 2..100: the 100th prunes.
  const puts = async () => {
    await Promise.all(Array.from({ length: 99 }, (_, i) => h.put(`s${i}`, { key: 'k', builtAt: 1 })));
  };
  return { d, puts, logged };
}

test('pruning the history looks at a bounded number of files at once', async () => {
  const { d, puts } = await crowded(50, 400);
  const most = await watchingStat(puts);
  assert.ok(most <= 16, `${most} stat calls at once`);
  const left = await readdir(d);
  assert.equal(left.length, 50);
  assert.ok(
    left.every((name) => name.endsWith('.jsonl')),
    'the oldest (previous-format) records went first',
  );
});

test('a record removed while the history is pruned does not fail the write that pruned', async () => {
  const { d, puts, logged } = await crowded(50, 100);
  // As a write of that source does once its new record is in place.
  const gone = join(d, `${'7'.padStart(64, '0')}.json`);
  await watchingStat(puts, async (path) => {
    if (path === gone) await fsp.rm(gone);
  });
  assert.deepEqual(logged, []);
  assert.equal((await readdir(d)).length, 50);
});

test('a record of zeros without a newline, as a crash can leave, is read once and counts as none', async () => {
  const { h, dir: d, logged } = history();
  await h.put('src', { key: 'k', builtAt: 1 });
  const [name] = await readdir(d);
  // Sparse: 256 MiB of zeros that take no disk.
  await truncate(join(d, name as string), 256 << 20);
  // The reader looks at its signal once per 64 KiB chunk: this one counts them, and stops a reader
  // that would go on past 40 MiB (a line that long is no record's).
  let chunks = 0;
  const counting = {
    get aborted() {
      return ++chunks > 640;
    },
    reason: new Error('read past 40 MiB'),
  } as AbortSignal;
  assert.equal(await h.get('src', counting), undefined);
  assert.ok(chunks <= 640, `${chunks} chunks read`);
  assert.equal(logged.length, 1);
});
