// A writer killed at any point never leaves a wrong or partial blob visible, and its ingest can be
// resumed by another process, whose lock reclaims the dead one's. The writer is a real child process
// driving the store, SIGKILLed mid-write, right before commit and between the steps of a commit.
import assert from 'node:assert/strict';
import { type ChildProcess, spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import { mkdtemp, readdir, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { describe, type TestContext, test } from 'node:test';
import { ContentStore } from '../../src/content/store.ts';
import { errorKind } from '../../src/errors.ts';
import type { Digest } from '../../src/oci/digest.ts';
import { digestOfBlob, streamFrom } from '../helpers/content-data.ts';

const CHILD = new URL('../helpers/content-writer-child.ts', import.meta.url).pathname;
const SIZE = 8 * 1024 * 1024;
const REF = 'layer-crash';
const WAIT_MS = 60_000;

interface Child {
  proc: ChildProcess;
  /** Resolves with the first stdout line matching `re`; rejects if the child exits first. */
  waitFor(re: RegExp): Promise<RegExpExecArray>;
  kill(): Promise<void>;
}

function startWriter(t: TestContext, root: string, seed: string, mode: string): Child {
  const proc = spawn(process.execPath, [CHILD, root, REF, seed, String(SIZE), mode], {
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let stderr = '';
  proc.stderr!.on('data', (b: Buffer) => {
    stderr += b.toString();
  });
  const lines: string[] = [];
  let closed = false;
  let waiters: Array<() => void> = [];
  const wake = (): void => {
    const now = waiters;
    waiters = [];
    for (const w of now) w();
  };
  createInterface({ input: proc.stdout! }).on('line', (line) => {
    lines.push(line);
    wake();
  });
  // 'close' comes after the last output line has been read.
  const closedP = new Promise<void>((resolve) =>
    proc.once('close', () => {
      closed = true;
      wake();
      resolve();
    }),
  );
  const kill = async (): Promise<void> => {
    if (proc.exitCode === null && proc.signalCode === null) proc.kill('SIGKILL');
    await closedP;
  };
  t.after(kill);
  const waitFor = (re: RegExp): Promise<RegExpExecArray> =>
    new Promise((resolve, reject) => {
      let seen = 0;
      let done = false;
      const finish = (err: Error | undefined, m?: RegExpExecArray): void => {
        if (done) return;
        done = true;
        clearTimeout(timer);
        if (err) reject(err);
        else resolve(m!);
      };
      const timer = setTimeout(() => finish(new Error(`child: no line matching ${re} in time`)), WAIT_MS);
      const check = (): void => {
        if (done) return;
        for (; seen < lines.length; seen++) {
          const m = re.exec(lines[seen]!);
          if (m) {
            finish(undefined, m);
            return;
          }
        }
        if (closed) finish(new Error(`child exited before printing ${re}: ${stderr}`));
        else waiters.push(check);
      };
      check();
    });
  return { proc, kill, waitFor };
}

async function newRoot(t: TestContext): Promise<string> {
  const root = await mkdtemp(join(tmpdir(), 'strata-content-crash-'));
  t.after(() => rm(root, { recursive: true, force: true }));
  return root;
}

/** Every visible blob hashes to its own name; returns the digests seen. */
async function visibleBlobsAreSound(store: ContentStore): Promise<Digest[]> {
  const seen: Digest[] = [];
  await store.walk(async (info) => {
    const h = createHash('sha256');
    for await (const chunk of await store.reader(info.digest)) h.update(chunk as Buffer);
    assert.equal(`sha256:${h.digest('hex')}`, info.digest, `blob ${info.digest} has other bytes`);
    seen.push(info.digest);
  });
  return seen;
}

/** Resumes the dead writer's ingest from this process and commits it. */
async function resumeAndCommit(store: ContentStore, seed: string, expected: Digest, wantOffset?: number) {
  const status = await store.status(REF);
  const w = await store.writer(REF, { expected, total: SIZE });
  assert.equal(w.offset, status.offset, 'the writer resumes at the persisted offset');
  if (wantOffset !== undefined) assert.equal(w.offset, wantOffset);
  // The re-hashed prefix is exactly the blob's prefix, even when the kill cut a write short.
  assert.equal(w.digest(), digestOfBlob(seed, w.offset));
  for await (const chunk of streamFrom(seed, SIZE, w.offset)) await w.write(chunk as Buffer);
  assert.equal(await w.commit(SIZE, expected), expected);
  const h = createHash('sha256');
  for await (const chunk of await store.blob({ mediaType: 'x/y', digest: expected, size: SIZE }).open()) {
    h.update(chunk as Buffer);
  }
  assert.equal(`sha256:${h.digest('hex')}`, expected);
}

async function assertClean(root: string, store: ContentStore): Promise<void> {
  assert.deepEqual(await store.listStatuses(), []);
  assert.deepEqual(await readdir(join(root, 'locks')), []);
  assert.deepEqual(await readdir(join(root, 'tmp')), []);
}

describe('content store survives a writer killed at any point', () => {
  test('killed while writing: no blob, resumable from the persisted offset, stale lock reclaimed', async (t) => {
    const root = await newRoot(t);
    const seed = 'mid-write';
    const expected = digestOfBlob(seed, SIZE);
    const child = startWriter(t, root, seed, 'write');
    // The first report of at least 1,000,000 bytes; the child goes on writing until the kill lands.
    const m = await child.waitFor(/^offset ([1-9]\d{6,})$/);
    const reported = Number(m[1]);
    await child.kill();

    assert.equal((await readdir(join(root, 'locks'))).length, 1, 'the dead writer left its lock');
    const store = await ContentStore.open(root);
    assert.deepEqual(await visibleBlobsAreSound(store), []);
    assert.equal(await store.has(expected), false);
    const status = await store.status(REF);
    assert.ok(status.offset >= reported && status.offset <= SIZE, `offset ${status.offset}`);
    assert.equal(status.total, SIZE);
    assert.equal(status.expected, expected);
    await resumeAndCommit(store, seed, expected);
    await assertClean(root, store);
  });

  test('a paused live writer keeps its lock; once killed its ingest resumes at the exact offset', async (t) => {
    const root = await newRoot(t);
    const seed = 'paused';
    const expected = digestOfBlob(seed, SIZE);
    const pause = 3 * 1024 * 1024 + 12_345;
    const child = startWriter(t, root, seed, `pause:${pause}`);
    await child.waitFor(/^written$/);
    const store = await ContentStore.open(root);
    for (const attempt of [() => store.writer(REF), () => store.abort(REF)]) {
      await assert.rejects(attempt(), (err) => {
        assert.equal(errorKind(err), 'Unavailable');
        assert.match((err as Error).message, new RegExp(`^ref ${REF} locked for .+: unavailable$`));
        return true;
      });
    }
    assert.equal((await store.status(REF)).offset, pause);
    await child.kill();
    await resumeAndCommit(store, seed, expected, pause);
    await assertClean(root, store);
  });

  for (const step of ['before-commit', 'sync', 'move'] as const) {
    test(`killed ${step === 'before-commit' ? 'right before commit' : `in commit before ${step}`}: no blob, all bytes kept`, async (t) => {
      const root = await newRoot(t);
      const seed = `commit-${step}`;
      const expected = digestOfBlob(seed, SIZE);
      const child = startWriter(t, root, seed, step === 'before-commit' ? 'write' : `commit:${step}`);
      await child.waitFor(step === 'before-commit' ? /^written$/ : new RegExp(`^step ${step}$`));
      await child.kill();
      const store = await ContentStore.open(root);
      assert.deepEqual(await visibleBlobsAreSound(store), []);
      assert.equal((await store.status(REF)).offset, SIZE);
      await resumeAndCommit(store, seed, expected, SIZE);
      await assertClean(root, store);
    });
  }

  test('killed after the data left the ingest but before the link: no blob, ingest restarts', async (t) => {
    const root = await newRoot(t);
    const seed = 'commit-link';
    const expected = digestOfBlob(seed, SIZE);
    const child = startWriter(t, root, seed, 'commit:link');
    await child.waitFor(/^step link$/);
    await child.kill();
    assert.equal((await readdir(join(root, 'tmp'))).length, 1, 'the moved data waits in tmp');
    const store = await ContentStore.open(root);
    assert.deepEqual(await readdir(join(root, 'tmp')), [], 'the dead process its tmp file is removed');
    assert.deepEqual(await visibleBlobsAreSound(store), []);
    assert.equal((await store.status(REF)).offset, 0);
    await resumeAndCommit(store, seed, expected, 0);
    await assertClean(root, store);
  });

  test('killed after the link, before cleanup: the blob is complete and the leftover ingest goes', async (t) => {
    const root = await newRoot(t);
    const seed = 'commit-cleanup';
    const expected = digestOfBlob(seed, SIZE);
    const child = startWriter(t, root, seed, 'commit:cleanup');
    await child.waitFor(/^step cleanup$/);
    await child.kill();
    const store = await ContentStore.open(root);
    assert.deepEqual(await visibleBlobsAreSound(store), [expected]);
    assert.equal((await store.info(expected)).size, SIZE);
    await assert.rejects(
      store.writer(REF, { expected, total: SIZE }),
      (err) => errorKind(err) === 'AlreadyExists',
    );
    await assertClean(root, store);
  });
});
