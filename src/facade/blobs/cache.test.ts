import assert from 'node:assert/strict';
import { chmod, mkdir, mkdtemp, open, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { PassThrough, Readable } from 'node:stream';
import { test } from 'node:test';
import { runCommand, waitFor } from '../../../test/helpers/process.ts';
import { GrowthRange } from '../../content/follow.ts';
import { exists } from '../../content/fs-util.ts';
import { Layout } from '../../content/layout.ts';
import { ContentStore, type StoreHooks } from '../../content/store.ts';
import { errorKind, isDataLoss, isNotFound, isOutOfRange, messageOf } from '../../errors.ts';
import { ContentView } from '../../metadata/content.ts';
import { MetadataDb } from '../../metadata/db.ts';
import type { Blob } from '../../oci/blob.ts';
import type { Descriptor } from '../../oci/descriptor.ts';
import { type Digest, digestOf } from '../../oci/digest.ts';
import { BlobCache, type BlobCacheOptions, type CacheRead } from './cache.ts';
import { type CacheStorage, DirCacheStorage } from './cache-storage.ts';
import { NamespaceCacheStorage } from './namespace-cache-storage.ts';

type Tuning = Omit<BlobCacheOptions, 'dir' | 'storage'>;

/**
 * Every test runs on both storages: a content store of the cache's own in `dir` (`strata facade`), and a
 * namespace of a daemon's content store and metadata database under `dir` (`strata up`), whose files are
 * laid out alike (blobs/, tmp/). close() closes what open() opened.
 */
interface Kind {
  name: string;
  open(dir: string, tuning: Tuning): Promise<{ cache: BlobCache; close(): Promise<void> }>;
}

const KINDS: Kind[] = [
  {
    name: 'own dir',
    async open(dir, tuning) {
      const cache = await BlobCache.open({ dir, ...tuning });
      return { cache, close: async () => cache.close() };
    },
  },
  {
    name: 'daemon store',
    async open(dir, tuning) {
      const store = await ContentStore.open(dir);
      const db = new MetadataDb(join(dir, 'meta.db'));
      const storage = new NamespaceCacheStorage(new ContentView({ store, db }));
      const cache = await BlobCache.open({ storage, ...tuning });
      return {
        cache,
        close: async () => {
          cache.close();
          await store.close();
          db.close();
        },
      };
    },
  },
];

/** Runs `fn` for each storage in turn; a failure names the storage. */
async function eachKind(fn: (kind: Kind) => Promise<void>): Promise<void> {
  for (const kind of KINDS) {
    try {
      await fn(kind);
    } catch (err) {
      if (err instanceof Error) err.message = `[${kind.name}] ${err.message}`;
      throw err;
    }
  }
}

async function withCache(
  maxBytes: number,
  fn: (cache: BlobCache, dir: string) => Promise<void>,
  options: { stallMs?: number } = {},
): Promise<void> {
  await eachKind((kind) =>
    inTempDir(async (dir) => {
      const opened = await kind.open(dir, { maxBytes, ...options });
      try {
        await fn(opened.cache, dir);
      } finally {
        await opened.close();
      }
    }),
  );
}

/** Runs `fn` with a fresh directory, removed after (tests that restart a cache open it there twice). */
async function inTempDir(fn: (dir: string) => Promise<void>): Promise<void> {
  const dir = await mkdtemp(join(tmpdir(), 'strata-cache-test-'));
  try {
    await fn(dir);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

function blob(seed: number, size: number): { bytes: Buffer; desc: Descriptor } {
  const bytes = Buffer.alloc(size, seed);
  return { bytes, desc: { mediaType: 'application/octet-stream', digest: digestOf(bytes), size } };
}

/** A source blob opened by `open(offset, signal)`, as a fill resumes it. */
function fill(desc: Descriptor, open: (offset: number, signal?: AbortSignal) => Promise<Readable>): Blob {
  return { descriptor: desc, open: (o = {}) => open(o.range?.offset ?? 0, o.signal) };
}

/** Readers fail as soon as a fill does; its ingest is removed a moment later. */
async function tmpEmptied(dir: string): Promise<void> {
  await waitFor(async () => (await readdir(join(dir, 'tmp'))).length === 0, 5000, {
    what: 'the failed fill to remove its ingest',
  });
}

async function readAll(s: Readable): Promise<Buffer> {
  const chunks: Buffer[] = [];
  for await (const c of s) chunks.push(c as Buffer);
  return Buffer.concat(chunks);
}

/** Reads `stream` in the background: the chunks so far, their bytes, and the end (the stream's error). */
function reading(stream: Readable): { chunks: Buffer[]; received(): number; done: Promise<void> } {
  const chunks: Buffer[] = [];
  let received = 0;
  const done = (async () => {
    for await (const c of stream) {
      chunks.push(c as Buffer);
      received += (c as Buffer).length;
    }
  })();
  done.catch(() => {});
  return { chunks, received: () => received, done };
}

/**
 * A source of `bytes` whose first answer sends `head` bytes and then waits for `first.end()`; later answers
 * come from `rest(offset)` (the blob's bytes unless given). `offsets` lists where each answer started.
 */
function heldSource(
  desc: Descriptor,
  bytes: Buffer,
  head: number,
  rest = (offset: number) => bytes.subarray(offset),
): { source: Blob; first: PassThrough; offsets: number[] } {
  const offsets: number[] = [];
  const first = new PassThrough();
  first.write(bytes.subarray(0, head));
  const source = fill(desc, async (offset) => {
    offsets.push(offset);
    return offsets.length === 1 ? first : Readable.from([rest(offset)]);
  });
  return { source, first, offsets };
}

/** A 4 MiB tmpfs (`options`: more mount options) and a cache in it, closed and unmounted after the test. */
async function cacheOnTmpfs(
  t: { after(fn: () => Promise<void>): void },
  tuning: Tuning,
  options = '',
): Promise<{ cache: BlobCache; mnt: string; dir: string }> {
  const mnt = await mkdtemp(join(tmpdir(), 'strata-cache-disk-'));
  await runCommand('mount', ['-t', 'tmpfs', '-o', `size=4m${options}`, 'tmpfs', mnt]);
  const dir = join(mnt, 'cache');
  const cache = await BlobCache.open({ dir, ...tuning });
  t.after(async () => {
    cache.close(); // its store closes in the background: detached even while a file is still open
    await runCommand('umount', ['-l', mnt]);
    await rm(mnt, { recursive: true, force: true });
  });
  return { cache, mnt, dir };
}

/** Reads `x` through the cache from a source that sends it whole. */
async function readThrough(cache: BlobCache, x: { bytes: Buffer; desc: Descriptor }): Promise<Buffer> {
  const r = await cache.read(
    x.desc,
    undefined,
    fill(x.desc, async () => Readable.from([x.bytes])),
  );
  return readAll(r.stream);
}

test('readers follow a fill in progress, from any offset, and only finish once it is verified', async () => {
  await withCache(1 << 20, async (cache) => {
    const { bytes, desc } = blob(1, 1000);
    const source = new PassThrough();
    let opened = 0;
    const first = await cache.read(
      desc,
      undefined,
      fill(desc, async () => {
        opened++;
        return source;
      }),
    );
    assert.equal(first.outcome, 'miss');
    const second = await cache.read(desc, { offset: 500, length: 500 }, undefined);
    assert.equal(second.outcome, 'joined');
    const all = readAll(first.stream);
    const part = readAll(second.stream);
    source.write(bytes.subarray(0, 600));
    await new Promise((r) => setTimeout(r, 20));
    source.end(bytes.subarray(600));
    assert.deepEqual(await all, bytes);
    assert.deepEqual(await part, bytes.subarray(500));
    assert.equal(opened, 1);
    // Readers have every byte once the store committed it; the cache's entry is complete a moment later.
    await waitFor(() => cache.has(desc.digest), 5000, { what: 'the fill committed' });
    const hit = await cache.read(desc, { offset: 10, length: 10 }, undefined);
    assert.equal(hit.outcome, 'hit');
    assert.deepEqual(await readAll(hit.stream), bytes.subarray(10, 20));
  });
});

test('wrong bytes fail every reader before the last byte and leave nothing cached', async () => {
  await withCache(1 << 20, async (cache, dir) => {
    const { desc } = blob(1, 1000);
    const wrong = Buffer.alloc(1000, 2);
    const r = await cache.read(
      desc,
      undefined,
      fill(desc, async () => Readable.from([wrong])),
    );
    let got = 0;
    await assert.rejects(
      (async () => {
        for await (const c of r.stream) got += (c as Buffer).length;
      })(),
      isDataLoss,
    );
    assert.ok(got < 1000);
    assert.equal(cache.has(desc.digest), false);
    await tmpEmptied(dir);
  });
});

test('a source sending too many bytes is refused', async () => {
  await withCache(1 << 20, async (cache) => {
    const { bytes, desc } = blob(3, 100);
    const r = await cache.read(
      desc,
      undefined,
      fill(desc, async () => Readable.from([bytes, Buffer.from('x')])),
    );
    await assert.rejects(readAll(r.stream), isDataLoss);
  });
});

test('bytes of a source that sent more than the blob are not kept for the next fill to resume', async () => {
  await withCache(1 << 20, async (cache) => {
    const { bytes, desc } = blob(3, 1000);
    // Another, longer blob under this digest: its first 600 bytes land before the 601st too many.
    const longer = Buffer.alloc(600, 9);
    const first = await cache.read(
      desc,
      undefined,
      fill(desc, async () => Readable.from([longer, longer])),
    );
    await assert.rejects(readAll(first.stream), isDataLoss);
    const offsets: number[] = [];
    const second = await cache.read(
      desc,
      undefined,
      fill(desc, async (offset) => {
        offsets.push(offset);
        return Readable.from([bytes.subarray(offset)]);
      }),
    );
    assert.deepEqual(await readAll(second.stream), bytes);
    assert.deepEqual(offsets, [0]);
  });
});

test('a broken source is resumed from the last byte written', async () => {
  await withCache(1 << 20, async (cache) => {
    const { bytes, desc } = blob(4, 1000);
    const offsets: number[] = [];
    const r = await cache.read(
      desc,
      undefined,
      fill(desc, async (offset) => {
        offsets.push(offset);
        if (offsets.length === 1) {
          return Readable.from(
            (async function* () {
              yield bytes.subarray(0, 400);
              throw Object.assign(new Error('socket hang up'), { code: 'ECONNRESET' });
            })(),
          );
        }
        return Readable.from([bytes.subarray(offset)]);
      }),
    );
    assert.deepEqual(await readAll(r.stream), bytes);
    assert.deepEqual(offsets, [0, 400]);
  });
});

test('a silent source fails its readers and joiners within the stall bound, and a later read starts afresh', async () => {
  await withCache(
    1 << 20,
    async (cache, dir) => {
      const { bytes, desc } = blob(6, 1000);
      // Never answers and ignores the signal, like a host that accepts a connection and says nothing.
      const silent = () => new Promise<Readable>(() => {});
      const first = await cache.read(desc, undefined, fill(desc, silent));
      await new Promise((r) => setTimeout(r, 100));
      const joined = await cache.read(desc, { offset: 0, length: 10 }, undefined);
      assert.equal(joined.outcome, 'joined');
      const stalled = (err: unknown) => {
        assert.equal(errorKind(err), 'DeadlineExceeded');
        assert.match(messageOf(err), /sent nothing for 0.3 s \(0 of 1000 bytes received\)/);
        return true;
      };
      await assert.rejects(readAll(first.stream), stalled);
      await assert.rejects(readAll(joined.stream), stalled);
      assert.equal(cache.has(desc.digest), false);
      await tmpEmptied(dir);

      const again = await cache.read(
        desc,
        undefined,
        fill(desc, async () => Readable.from([bytes])),
      );
      assert.equal(again.outcome, 'miss');
      assert.deepEqual(await readAll(again.stream), bytes);
    },
    { stallMs: 300 },
  );
});

test('a source that stops mid-body fails on the stall bound; one that keeps sending is never cut', async () => {
  await withCache(
    1 << 20,
    async (cache) => {
      const { bytes, desc } = blob(7, 1000);
      const halted = new PassThrough();
      halted.write(bytes.subarray(0, 400));
      let opens = 0;
      const r = await cache.read(
        desc,
        undefined,
        fill(desc, async () => {
          opens++;
          return halted;
        }),
      );
      await assert.rejects(readAll(r.stream), (err) => {
        assert.equal(errorKind(err), 'DeadlineExceeded');
        assert.match(messageOf(err), /400 of 1000 bytes/);
        return true;
      });
      assert.equal(opens, 1);
      assert.ok(halted.destroyed);

      // Chunks 250 ms apart: 1.5 s in all, over the bound, but never silent for long. The gap leaves
      // 750 ms of slack per chunk, so a loaded machine's late timers do not cut it. (The fill resumes
      // after the 400 bytes the stalled one kept.)
      let resumedAt = -1;
      const slow = await cache.read(
        desc,
        undefined,
        fill(desc, async (offset) => {
          resumedAt = offset;
          return Readable.from(
            (async function* () {
              for (let i = Math.floor(offset / 100); i < 10; i++) {
                await new Promise((res) => setTimeout(res, 250));
                yield bytes.subarray(Math.max(offset, i * 100), (i + 1) * 100);
              }
            })(),
          );
        }),
      );
      assert.deepEqual(await readAll(slow.stream), bytes);
      assert.equal(resumedAt, 400);
    },
    { stallMs: 1000 },
  );
});

test('bad ranges and missing sources are refused', async () => {
  await withCache(1 << 20, async (cache) => {
    const { desc } = blob(5, 10);
    await assert.rejects(cache.read(desc, { offset: 5, length: 6 }, undefined), isOutOfRange);
    await assert.rejects(cache.read(desc, undefined, undefined), isNotFound);
  });
});

test('eviction drops the least recently used blob, never one being read, and survives a restart', () =>
  eachKind(async (kind) => {
    await inTempDir(async (dir) => {
      const first = await kind.open(dir, { maxBytes: 250 });
      const cache = first.cache;
      const a = blob(1, 100);
      const b = blob(2, 100);
      const c = blob(3, 100);
      for (const x of [a, b]) await readThrough(cache, x);
      // Hold a reader open on a (the least recently used) while c comes in: b goes instead.
      const holding = await cache.read(a.desc, undefined, undefined);
      await readThrough(cache, c);
      await waitFor(
        () => cache.cachedDigests().sort().join() === [a.desc.digest, c.desc.digest].sort().join(),
        5000,
        { what: 'b evicted, a and c cached' },
      );
      assert.deepEqual(await readAll(holding.stream), a.bytes);
      await first.close();
      const second = await kind.open(dir, { maxBytes: 250 });
      const reopened = second.cache;
      assert.equal(reopened.bytes, 200);
      assert.equal(reopened.has(a.desc.digest), true);
      await second.close();
    });
  }));

test('a fill whose source went away keeps its bytes; the next fill resumes from there', async () => {
  await withCache(1 << 20, async (cache) => {
    const { bytes, desc } = blob(7, 4000);
    const offsets: number[] = [];
    const broken = fill(desc, async (offset) => {
      offsets.push(offset);
      // Sends 1500 bytes, then the connection breaks (every resume within the fill too).
      const s = new PassThrough();
      if (offset === 0) s.write(bytes.subarray(0, 1500));
      setImmediate(() => s.destroy(new Error('socket hang up')));
      return s;
    });
    const first = await cache.read(desc, undefined, broken);
    await assert.rejects(readAll(first.stream));
    assert.equal(cache.has(desc.digest), false);
    await waitFor(() => cache.bytes === 1500, 5000, { what: 'the kept bytes to count against the cap' });

    const whole = fill(desc, async (offset) => {
      offsets.push(offset);
      return Readable.from([bytes.subarray(offset)]);
    });
    const second = await cache.read(desc, undefined, whole);
    assert.deepEqual(await readAll(second.stream), bytes);
    assert.equal(offsets.at(-1), 1500, 'resumed at the kept offset');
    await waitFor(() => cache.has(desc.digest), 5000, { what: 'the fill committed' });
    assert.equal(cache.bytes, 4000);
  });
});

test('a failed fill keeps its bytes without evicting a cached blob for the room it no longer needs', async () => {
  await withCache(10_000, async (cache) => {
    const a = blob(1, 4000);
    await readThrough(cache, a);
    await waitFor(() => cache.has(a.desc.digest), 5000, { what: 'a committed' });
    // b fits next to a (9000 of 10000 bytes), then breaks after 1500 bytes: those stay for a resume.
    const b = blob(2, 5000);
    const broken = fill(b.desc, async (offset) => {
      const s = new PassThrough();
      if (offset === 0) s.write(b.bytes.subarray(0, 1500));
      setImmediate(() => s.destroy(new Error('socket hang up')));
      return s;
    });
    await assert.rejects(readAll((await cache.read(b.desc, undefined, broken)).stream));
    await waitFor(() => cache.bytes !== 9000, 5000, { what: 'the failed fill to give its room back' });
    assert.equal(cache.has(a.desc.digest), true, 'a is still cached');
    assert.equal(cache.bytes, 4000 + 1500);
  });
});

test('bytes added while a fill of the same blob is under way stay held when that fill fails', async () => {
  await withCache(1 << 20, async (cache, dir) => {
    const { bytes, desc } = blob(6, 1000);
    const source = new PassThrough();
    let opened = false;
    const client = await cache.read(
      desc,
      undefined,
      fill(desc, async () => {
        opened = true;
        return source;
      }),
    );
    const body = readAll(client.stream);
    await waitFor(() => opened, 10_000, { what: 'the fill to open its source' });
    source.write(bytes.subarray(0, 100));
    // A static layer file of the same bytes is stored meanwhile; then the upstream body ends short.
    const adding = cache.addHeld(Readable.from([bytes]));
    const file = join(dir, 'blobs', 'sha256', desc.digest.slice('sha256:'.length));
    await waitFor(() => exists(file), 10_000, { what: 'the added blob stored' });
    source.end();
    await assert.rejects(body, isDataLoss);
    const held = await adding;
    assert.equal(held.digest, desc.digest);
    assert.equal(cache.has(desc.digest), true, 'the held blob is cached');
    const again = await cache.read(desc, undefined, undefined);
    assert.deepEqual(await readAll(again.stream), bytes);
    held.release();
  });
});

test('a blob file found at start that is not its digest is dropped before it is served, and fetched again', () =>
  eachKind(async (kind) => {
    await inTempDir(async (dir) => {
      const { bytes, desc } = blob(9, 3000);
      const source = fill(desc, async (offset) => Readable.from([bytes.subarray(offset)]));
      const first = await kind.open(dir, { maxBytes: 1 << 20 });
      await readAll((await first.cache.read(desc, undefined, source)).stream);
      await first.close();
      const file = join(dir, 'blobs', 'sha256', desc.digest.slice('sha256:'.length));
      await chmod(file, 0o644);
      await writeFile(file, Buffer.alloc(3000, 1));
      const corrupt: string[] = [];
      const second = await kind.open(dir, {
        maxBytes: 1 << 20,
        events: { onCorrupt: (d) => corrupt.push(d) },
      });
      const cache = second.cache;
      try {
        // A range read is checked too: a lazy-pulling client could not tell wrong bytes in a range.
        const r = await cache.read(desc, { offset: 100, length: 10 }, source);
        assert.equal(r.outcome, 'miss');
        assert.deepEqual(await readAll(r.stream), bytes.subarray(100, 110));
        assert.deepEqual(corrupt, [desc.digest]);
        await waitFor(() => cache.has(desc.digest), 5000, { what: 'the refetched blob' });
        const again = await cache.read(desc, undefined, undefined);
        assert.equal(again.outcome, 'hit');
        assert.deepEqual(await readAll(again.stream), bytes);
      } finally {
        await second.close();
      }
    });
  }));

test('a blob found at start that its own check leaves to eviction is fetched again, not NotFound', () =>
  eachKind(async (kind) => {
    // While a's first read checks it, b's fill takes the cache over its cap, and the check's end lets a
    // go: the read went on to open a's deleted file. Whether the open or the deletion lands first is the
    // thread pool's choice, so a few rounds.
    for (let round = 0; round < 5; round++) {
      await inTempDir(async (dir) => {
        const a = blob(1, 4 << 20);
        const first = await kind.open(dir, { maxBytes: 5 << 20 });
        await readThrough(first.cache, a);
        await first.close();
        const second = await kind.open(dir, { maxBytes: 5 << 20 });
        try {
          const b = blob(2, 2 << 20);
          const held = new PassThrough();
          const reading = second.cache.read(
            a.desc,
            undefined,
            fill(a.desc, async (offset) => Readable.from([a.bytes.subarray(offset)])),
          );
          const filling = await second.cache.read(
            b.desc,
            undefined,
            fill(b.desc, async () => held),
          );
          assert.deepEqual(await readAll((await reading).stream), a.bytes);
          filling.stream.destroy();
          held.destroy();
        } finally {
          await second.close();
        }
      });
    }
  }));

test('a corrupt blob found at start is not taken back in while it is being discarded', () =>
  eachKind(async (kind) => {
    await inTempDir(async (dir) => {
      const x = blob(3, 8 << 20);
      const source = fill(x.desc, async (offset) => Readable.from([x.bytes.subarray(offset)]));
      const first = await kind.open(dir, { maxBytes: 64 << 20 });
      await readThrough(first.cache, x);
      await first.close();
      const file = join(dir, 'blobs', 'sha256', x.desc.digest.slice('sha256:'.length));
      await chmod(file, 0o644);
      await writeFile(file, Buffer.alloc(x.desc.size, 7));
      // Another client asks for the blob as soon as the cache has found it wrong.
      let cache: BlobCache | undefined;
      let meanwhile: Promise<CacheRead> | undefined;
      const second = await kind.open(dir, {
        maxBytes: 64 << 20,
        events: {
          onCorrupt: () => {
            meanwhile ??= cache?.read(x.desc, undefined, source);
            // Awaited below; not unhandled if the test fails before.
            meanwhile?.catch(() => {});
          },
        },
      });
      cache = second.cache;
      try {
        assert.deepEqual(await readAll((await cache.read(x.desc, undefined, source)).stream), x.bytes);
        assert.ok(meanwhile, 'the corrupt file was found');
        assert.deepEqual(await readAll((await meanwhile).stream), x.bytes, 'not the corrupt bytes');
        await waitFor(() => cache.has(x.desc.digest), 5000, { what: 'the refetched blob' });
        assert.deepEqual(await readAll((await cache.read(x.desc, undefined, source)).stream), x.bytes);
      } finally {
        await second.close();
      }
    });
  }));

test('prefetch fills the cache without a reader; cancelling it abandons a fill only it holds', async () => {
  await withCache(1 << 20, async (cache) => {
    const { bytes, desc } = blob(7, 1000);
    const done = await cache.prefetch(
      fill(desc, async () => Readable.from([bytes])),
      new AbortController().signal,
    );
    assert.equal(done, 'miss');
    assert.equal(cache.has(desc.digest), true);
    assert.equal(
      await cache
        .prefetch(
          fill(desc, async () => Readable.from([])),
          AbortSignal.abort(),
        )
        .catch(() => 'aborted'),
      'aborted',
    );
    assert.equal(
      await cache.prefetch(
        fill(desc, async () => Readable.from([])),
        new AbortController().signal,
      ),
      'hit',
    );

    // Cancelled while its source holds back: the fill stops at once and nothing is cached.
    const other = blob(8, 1000);
    const source = new PassThrough();
    let opened = false;
    const controller = new AbortController();
    const pending = cache.prefetch(
      fill(other.desc, async () => {
        opened = true;
        return source;
      }),
      controller.signal,
    );
    await waitFor(() => opened, 10_000, { what: 'the fill to open its source' });
    source.write(other.bytes.subarray(0, 10));
    controller.abort(new Error('spec removed'));
    await assert.rejects(pending, /spec removed/);
    await waitFor(() => source.destroyed, 10_000, { what: 'the source to be let go' });
    assert.equal(cache.has(other.desc.digest), false);
  });
});

test('a cancelled prefetch leaves a fill a client reads to the client', async () => {
  await withCache(1 << 20, async (cache) => {
    const { bytes, desc } = blob(9, 1000);
    const source = new PassThrough();
    let opened = false;
    const controller = new AbortController();
    const pending = cache.prefetch(
      fill(desc, async () => {
        opened = true;
        return source;
      }),
      controller.signal,
    );
    await waitFor(() => opened, 10_000, { what: 'the fill to open its source' });
    const client = await cache.read(desc, undefined, undefined);
    assert.equal(client.outcome, 'joined');
    const body = readAll(client.stream);
    controller.abort(new Error('spec removed'));
    await assert.rejects(pending, /spec removed/);
    source.end(bytes);
    assert.deepEqual(await body, bytes);
    await waitFor(() => cache.has(desc.digest), 5000, { what: 'the fill committed' });
  });
});

test('a fill whose disk write fails keeps no bytes for a resume, and its reader gets the rest from the source', {
  timeout: 60_000,
}, async (t) => {
  // A real disk running out mid-blob: a 4 MiB tmpfs, filled by another file once the fill is under way.
  const { cache, mnt, dir } = await cacheOnTmpfs(t, { maxBytes: 64 << 20 });
  const { bytes, desc } = blob(11, 2 << 20);
  const head = 512 << 10;
  const { source, first, offsets } = heldSource(desc, bytes, head);
  const r = await cache.read(desc, undefined, source);
  assert.equal(r.outcome, 'miss');
  // Read at positions, into reused buffers, as the server sends a cached file, also should the disk fail.
  assert.ok(r.stream instanceof GrowthRange, 'a follower of the fill');
  const body = reading(r.stream);
  await waitFor(() => body.received() >= head, 10_000, { what: 'the first bytes written and followed' });
  const filler = join(mnt, 'filler');
  await fillDisk(filler);
  first.end(bytes.subarray(head));
  await body.done;
  assert.ok(Buffer.concat(body.chunks).equals(bytes), 'the reader got the whole blob');
  await tmpEmptied(dir);
  assert.equal(cache.bytes, 0, 'no bytes kept for a resume');
  assert.equal(cache.has(desc.digest), false);

  assert.deepEqual(offsets, [0, head], 'the rest asked for once, from where the reader was');

  await rm(filler);
  const again = await cache.read(desc, undefined, source);
  assert.equal(again.outcome, 'miss');
  assert.deepEqual(await readAll(again.stream), bytes);
  assert.deepEqual(offsets.slice(2), [0], 'fetched from the start, not resumed after untrusted bytes');
  await waitFor(() => cache.has(desc.digest), 5000, { what: 'the fill committed' });
});

/** Writes `file` until its file system has no room left. */
async function fillDisk(file: string): Promise<void> {
  const fh = await open(file, 'w');
  const chunk = Buffer.alloc(64 << 10, 1);
  try {
    for (;;) await fh.write(chunk);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ENOSPC') throw err;
  } finally {
    await fh.close();
  }
}

/** Creates empty files under `mnt` until its file system has no inode left; returns their directory. */
async function spendInodes(mnt: string): Promise<string> {
  const spent = join(mnt, 'inodes');
  await runCommand('mkdir', [spent]);
  for (let i = 0; ; i++) {
    try {
      await writeFile(join(spent, String(i)), '');
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOSPC') return spent;
      throw err;
    }
  }
}

test('a fill on a disk remounted read-only serves its reader from the source, uncached', {
  timeout: 60_000,
}, async (t) => {
  const { cache, mnt } = await cacheOnTmpfs(t, { maxBytes: 64 << 20 });
  await runCommand('mount', ['-o', 'remount,ro', mnt]);
  const { bytes, desc } = blob(12, 300_000);
  const r = await cache.read(
    desc,
    undefined,
    fill(desc, async (offset) => Readable.from([bytes.subarray(offset)])),
  );
  assert.deepEqual(await readAll(r.stream), bytes);
  assert.equal(cache.has(desc.digest), false);
});

test('after a disk failure that is not for room, fills pause (reads go uncached), then one probes, longer each time', {
  timeout: 60_000,
}, async (t) => {
  const fillErrors: string[] = [];
  const failing: number[] = [];
  let recovered = 0;
  const { cache, mnt } = await cacheOnTmpfs(t, {
    maxBytes: 64 << 20,
    diskRetryMs: 1000,
    events: {
      onFillError: (_d, err) => fillErrors.push(String((err as NodeJS.ErrnoException).code)),
      onDiskFailing: (_err, retryMs) => failing.push(retryMs),
      onDiskRecovered: () => recovered++,
    },
  });
  await runCommand('mount', ['-o', 'remount,ro', mnt]);
  const fetched: number[] = [];
  const read = async (seed: number) => {
    const { bytes, desc } = blob(seed, 100_000);
    const r = await cache.read(
      desc,
      undefined,
      fill(desc, async (offset) => {
        fetched.push(seed);
        return Readable.from([bytes.subarray(offset)]);
      }),
    );
    assert.deepEqual(await readAll(r.stream), bytes);
    return { r, desc };
  };
  assert.equal((await read(20)).r.outcome, 'bypass');
  assert.deepEqual(fillErrors, ['EROFS'], 'the first fill tried the disk');
  const first = cache.diskFailure;

  // Within the pause (one probe may come in on a slow machine).
  for (const seed of [21, 22, 23]) assert.equal((await read(seed)).r.outcome, 'bypass');
  assert.ok(fillErrors.length <= 2, `fills tried the failing disk: ${fillErrors}`);
  assert.deepEqual(failing, [1000], 'told once');
  assert.ok(first, 'fills paused');
  assert.ok(first.reason.includes('EROFS'), first.reason);
  assert.equal(first.retryMs, 1000);

  // A probe after the pause fails again: the pause doubles, nothing more is told.
  let seed = 30;
  await waitFor(
    async () => {
      await read(seed++);
      return fillErrors.length >= 2;
    },
    10_000,
    { what: 'a probe fill after the pause' },
  );
  assert.equal(cache.diskFailure!.retryMs, 2000, `pause ${cache.diskFailure!.retryMs}`);
  assert.equal(cache.diskFailure!.since.getTime(), first.since.getTime());
  assert.deepEqual(failing, [1000]);

  // The disk is back: the next probe fills, and fills go on.
  await runCommand('mount', ['-o', 'remount,rw', mnt]);
  const back = await waitFor(
    async () => {
      const got = await read(seed++);
      return got.r.outcome === 'miss' && got.desc;
    },
    10_000,
    { what: 'a probe fill on the disk once writable again' },
  );
  await waitFor(() => cache.has(back.digest), 5000, { what: 'the probe committed' });
  assert.equal(cache.diskFailure, undefined);
  assert.equal(recovered, 1);
  assert.equal((await read(99)).r.outcome, 'miss');
  assert.equal(fetched.length, 4 + (seed - 30) + 1, 'each blob fetched once');
});

test('a fill whose commit fails on the disk keeps nothing, and its reader gets the rest from the source', {
  timeout: 60_000,
}, async (t) => {
  // A real disk that fails the commit: a tmpfs out of inodes once every byte is written, so linking the
  // blob into place fails (tmpfs counts a hard link as an inode).
  const { cache, mnt, dir } = await cacheOnTmpfs(t, { maxBytes: 64 << 20 }, ',nr_inodes=64');
  const { bytes, desc } = blob(13, 300_000);
  const head = bytes.length - 1000;
  const { source, first, offsets } = heldSource(desc, bytes, head);
  const r = await cache.read(desc, undefined, source);
  assert.equal(r.outcome, 'miss');
  const body = reading(r.stream);
  await waitFor(() => body.received() >= head, 10_000, { what: 'the first bytes written and followed' });
  const spent = await spendInodes(mnt);
  first.end(bytes.subarray(head));
  await body.done;
  assert.ok(Buffer.concat(body.chunks).equals(bytes), 'the reader got the whole blob');
  // Every byte but the last (held back until a commit) came from the ingest.
  assert.deepEqual(offsets, [0, bytes.length - 1], 'the rest asked for once, from where the reader was');
  await tmpEmptied(dir);
  assert.equal(cache.has(desc.digest), false);
  assert.equal(cache.bytes, 0);
  const blobs = join(dir, 'blobs', 'sha256');
  assert.deepEqual(await readdir(blobs).catch(() => []), [], 'no blob half in place');

  await rm(spent, { recursive: true });
  const again = await cache.read(desc, undefined, source);
  assert.equal(again.outcome, 'miss');
  assert.deepEqual(await readAll(again.stream), bytes);
  await waitFor(() => cache.has(desc.digest), 5000, { what: 'the fill committed' });
});

test('a Range read of a fill whose commit fails on the disk gets the rest from the source', {
  timeout: 60_000,
}, async (t) => {
  // As above; the store fails the ingest's followers as the link fails, before the fill has told the
  // cache why, and a Range read asks for the rest at once (a whole blob is hashed again first).
  const { cache, mnt } = await cacheOnTmpfs(t, { maxBytes: 64 << 20 }, ',nr_inodes=64');
  const { bytes, desc } = blob(16, 300_000);
  const head = bytes.length - 1000;
  const { source, first, offsets } = heldSource(desc, bytes, head);
  const miss = await cache.read(desc, undefined, source);
  const whole = reading(miss.stream);
  const r = await cache.read(desc, { offset: 1000 }, source);
  assert.equal(r.outcome, 'joined');
  const body = reading(r.stream);
  await waitFor(() => body.received() >= head - 1000, 10_000, { what: 'the first bytes followed' });
  await spendInodes(mnt);
  first.end(bytes.subarray(head));
  await body.done;
  assert.ok(Buffer.concat(body.chunks).equals(bytes.subarray(1000)), 'the Range reader got its bytes');
  await whole.done;
  assert.ok(Buffer.concat(whole.chunks).equals(bytes), 'the whole reader got the blob');
  assert.deepEqual(offsets.slice(0, 1), [0]);
  assert.equal(offsets.length, 3, `the rest asked for once per reader: ${offsets}`);
});

test('a whole blob served from a fill that failed writing, then from its source, fails unless it is the blob', {
  timeout: 60_000,
}, async (t) => {
  const { cache, mnt } = await cacheOnTmpfs(t, { maxBytes: 64 << 20 });
  const { bytes, desc } = blob(14, 2 << 20);
  const head = 512 << 10;
  // The source's second answer (the rest, for the reader once the disk failed) is not the blob's bytes.
  const { source, first, offsets } = heldSource(desc, bytes, head, (offset) =>
    Buffer.alloc(bytes.length - offset, 99),
  );
  const r = await cache.read(desc, undefined, source);
  const body = reading(r.stream);
  await waitFor(() => body.received() >= head, 10_000, { what: 'the first bytes written and followed' });
  await fillDisk(join(mnt, 'filler'));
  first.end(bytes.subarray(head));
  await assert.rejects(body.done, (err) => isDataLoss(err), 'a wrong whole blob fails');
  assert.ok(body.received() < bytes.length, `the body does not complete: ${body.received()} bytes`);
  assert.equal(offsets.length, 2);
});

test('a static layer stored while a corrupt copy of it is being discarded stays cached', async () => {
  await inTempDir(async (dir) => {
    const { bytes, desc } = blob(15, 5000);
    const first = await BlobCache.open({ dir, maxBytes: 1 << 20 });
    const source = fill(desc, async (offset) => Readable.from([bytes.subarray(offset)]));
    await readAll((await first.read(desc, undefined, source)).stream);
    first.close();
    const file = join(dir, 'blobs', 'sha256', desc.digest.slice('sha256:'.length));
    await chmod(file, 0o644);
    await writeFile(file, Buffer.alloc(5000, 1));

    // The discard of the corrupt file waits until the static layer's bytes are stored.
    const own = await DirCacheStorage.open(dir);
    let letGo = () => {};
    const gate = new Promise<void>((resolve) => {
      letGo = resolve;
    });
    let discarding = false;
    const storage: CacheStorage = Object.assign(Object.create(own) as DirCacheStorage, {
      discard: async (d: Digest) => {
        discarding = true;
        await gate;
        return own.discard(d);
      },
    });
    const cache = await BlobCache.open({ storage, maxBytes: 1 << 20 });
    try {
      // A read with no source (as of a static layer) finds the file corrupt.
      const reading = cache.read(desc, undefined, undefined).then((r) => readAll(r.stream));
      reading.catch(() => {});
      await waitFor(() => discarding, 10_000, { what: 'the corrupt file found and its discard begun' });
      const adding = cache.addHeld(Readable.from([bytes]));
      // Time for the held blob to be committed under the discard's feet, as it was before.
      await new Promise((r) => setTimeout(r, 100));
      letGo();
      const held = await adding;
      await reading.catch(() => {});
      const again = await cache.read(desc, undefined, undefined);
      assert.deepEqual(await readAll(again.stream), bytes, 'the held blob is served, with no source');
      held.release();
    } finally {
      cache.close();
    }
  });
});

/**
 * A cache on a daemon's content store (durable, as in `strata up`) opened with the store's `hooks`, removed
 * after the test; `wrap` may stand in for some of the storage's methods.
 */
async function onDaemonStore(
  t: { after(fn: () => Promise<void>): void },
  hooks: StoreHooks,
  wrap: (storage: NamespaceCacheStorage) => CacheStorage = (s) => s,
): Promise<{ cache: BlobCache; view: ContentView; storage: NamespaceCacheStorage }> {
  const dir = await mkdtemp(join(tmpdir(), 'strata-cache-test-'));
  const store = await ContentStore.open(dir, { hooks });
  const db = new MetadataDb(join(dir, 'meta.db'));
  const view = new ContentView({ store, db });
  const storage = new NamespaceCacheStorage(view);
  const cache = await BlobCache.open({ storage: wrap(storage), maxBytes: 1 << 20 });
  t.after(async () => {
    cache.close();
    await store.close();
    db.close();
    await rm(dir, { recursive: true, force: true });
  });
  return { cache, view, storage };
}

/** `storage` with `methods` in place of its own (the others still its, on it). */
function standIn(storage: CacheStorage, methods: Partial<CacheStorage>): CacheStorage {
  return Object.assign(Object.create(storage) as CacheStorage, methods);
}

/** A writer of `storage` whose commit, should it fail, says so only after `failed()` (awaited). */
function commitFailsLate(storage: CacheStorage, failed: () => Promise<void>): CacheStorage['writer'] {
  return async (ref, expected) => {
    const w = await storage.writer(ref, expected);
    return {
      get offset() {
        return w.offset;
      },
      digest: () => w.digest(),
      write: (chunks) => w.write(chunks),
      close: (reason) => w.close(reason),
      commit: async (size, digest) => {
        try {
          await w.commit(size, digest);
        } catch (err) {
          await failed();
          throw err;
        }
      },
    };
  };
}

/** A promise and its resolve. */
function gate(): { open(): void; passed: Promise<void> } {
  let open = () => {};
  const passed = new Promise<void>((resolve) => {
    open = resolve;
  });
  return { open, passed };
}

const linkFails = (err: Error): StoreHooks => ({
  beforeCommitStep: (step) => {
    if (step === 'link') throw err;
  },
});

test('a reader with no source following a fill whose commit fails on the disk is told the disk error', async (t) => {
  const eio = Object.assign(new Error('EIO: i/o error, link'), { code: 'EIO' });
  const { cache } = await onDaemonStore(t, linkFails(eio));
  const { bytes, desc } = blob(17, 300_000);
  const head = 1000;
  const { source, first } = heldSource(desc, bytes, head);
  const whole = reading((await cache.read(desc, undefined, source)).stream);
  // A read that cannot go to the source (as of a static layer) joins the fill.
  const joined = await cache.read(desc, undefined, undefined);
  assert.equal(joined.outcome, 'joined');
  const body = reading(joined.stream);
  first.end(bytes.subarray(head));
  await assert.rejects(body.done, (err) => err === eio, 'the reason, not a writer closed before its commit');
  await whole.done;
  assert.ok(Buffer.concat(whole.chunks).equals(bytes), 'a reader with the source gets the rest from there');
});

test('a read while a fill whose commit failed on the disk is settling is served from the source, never NotFound', async (t) => {
  const eio = Object.assign(new Error('EIO: i/o error, link'), { code: 'EIO' });
  // The store has ended the ingest for its followers before the cache hears of the failed commit; then the
  // cache cleans up. Each is held here.
  const told = gate();
  const cleanup = gate();
  let commitFailed = false;
  let cleaning = false;
  const { cache } = await onDaemonStore(t, linkFails(eio), (storage) =>
    standIn(storage, {
      writer: commitFailsLate(storage, async () => {
        commitFailed = true;
        await told.passed;
      }),
      abort: async (ref) => {
        cleaning = true;
        await cleanup.passed;
        return storage.abort(ref);
      },
    }),
  );
  const { bytes, desc } = blob(18, 300_000);
  const { source, first } = heldSource(desc, bytes, 1000);
  const whole = reading((await cache.read(desc, undefined, source)).stream);
  first.end(bytes.subarray(1000));
  await waitFor(() => commitFailed, 10_000, { what: 'the commit failed' });
  const late = cache.read(desc, undefined, source);
  late.catch(() => {});
  await new Promise((r) => setTimeout(r, 50));
  told.open();
  await waitFor(() => cleaning, 10_000, { what: 'the failed fill cleaning up' });
  // The fill is gone for new requests, and fills are paused already: no new fill on the failing disk.
  const meanwhile = await cache.read(desc, undefined, source);
  assert.equal(meanwhile.outcome, 'bypass');
  assert.deepEqual(await readAll(meanwhile.stream), bytes);
  cleanup.open();
  const r = await late;
  assert.equal(r.outcome, 'bypass');
  assert.deepEqual(await readAll(r.stream), bytes);
  await whole.done;
  assert.ok(Buffer.concat(whole.chunks).equals(bytes));
});

test('a static layer stored while a fill of the same bytes syncs its commit stays cached when that commit fails', async (t) => {
  // Every FileHandle shares one prototype: the fill's blob-directory sync is held, then fails.
  const probe = await open(tmpdir(), 'r');
  const proto = Object.getPrototypeOf(probe) as { sync(): Promise<void> };
  await probe.close();
  const { sync } = proto;
  t.after(async () => {
    proto.sync = sync;
  });
  let syncing = false;
  let fail = (_err: Error) => {};
  const { cache, view, storage } = await onDaemonStore(t, {
    beforeCommitStep: (step, ref) => {
      if (step !== 'link' || !ref.includes('/fill-')) return;
      proto.sync = () => {
        proto.sync = sync;
        syncing = true;
        return new Promise((_resolve, reject) => {
          fail = reject;
        });
      };
    },
  });
  const { bytes, desc } = blob(19, 300_000);
  const r = await cache.read(
    desc,
    undefined,
    fill(desc, async (offset) => Readable.from([bytes.subarray(offset)])),
  );
  const body = reading(r.stream);
  await waitFor(() => syncing, 10_000, { what: 'the fill linked its blob and syncs the directory' });
  // The static layer's commit finds the blob there and takes it as stored.
  const adding = cache.addHeld(Readable.from([bytes]));
  await waitFor(() => view.has(storage.namespace, desc.digest), 10_000, { what: 'the static layer stored' });
  fail(Object.assign(new Error('EIO: i/o error, fsync'), { code: 'EIO' }));
  const held = await adding;
  await body.done;
  assert.ok(Buffer.concat(body.chunks).equals(bytes), 'the fill reader got the blob');
  // Without its row in the cache's namespace the daemon's collector would free the bytes.
  assert.equal(view.has(storage.namespace, desc.digest), true, 'the cache holds the blob');
  const again = await cache.read(desc, undefined, undefined);
  assert.equal(again.outcome, 'hit');
  assert.deepEqual(await readAll(again.stream), bytes);
  held.release();
});

test('a static layer stored while a fill whose commit failed is cleaning up is not discarded with it', async () => {
  await inTempDir(async (dir) => {
    const own = await DirCacheStorage.open(dir);
    const cleanup = gate();
    let cleaning = false;
    const enospc = Object.assign(new Error('ENOSPC: no space left on device, link'), { code: 'ENOSPC' });
    // Fills' commits fail before anything is put in place; the static layer's does not.
    const storage = standIn(own, {
      writer: async (ref, expected) => {
        const w = await own.writer(ref, expected);
        if (!expected) return w;
        return Object.assign(Object.create(w) as typeof w, {
          commit: async () => {
            throw enospc;
          },
        });
      },
      abort: async (ref) => {
        cleaning = true;
        await cleanup.passed;
        return own.abort(ref);
      },
    });
    const cache = await BlobCache.open({ storage, maxBytes: 1 << 20 });
    try {
      const { bytes, desc } = blob(20, 5000);
      const source = fill(desc, async (offset) => Readable.from([bytes.subarray(offset)]));
      const body = reading((await cache.read(desc, undefined, source)).stream);
      await waitFor(() => cleaning, 10_000, { what: 'the failed fill cleaning up' });
      const held = await cache.addHeld(Readable.from([bytes]));
      cleanup.open();
      // The reader waits for the fill's verdict, so the failed fill is done once it has every byte.
      await body.done;
      assert.ok(Buffer.concat(body.chunks).equals(bytes), 'the reader gets the rest from the source');
      const again = await cache.read(desc, undefined, undefined);
      assert.deepEqual(await readAll(again.stream), bytes, 'the held blob is served, with no source');
      held.release();
    } finally {
      cache.close();
    }
  });
});

test('a static layer read in while the disk fails: refused at once during the pause, and else counted as a fill', {
  timeout: 60_000,
}, async (t) => {
  const failing: number[] = [];
  let recovered = 0;
  const { cache, mnt } = await cacheOnTmpfs(t, {
    maxBytes: 64 << 20,
    diskRetryMs: 1500,
    events: {
      onDiskFailing: (_err, retryMs) => failing.push(retryMs),
      onDiskRecovered: () => recovered++,
    },
  });
  await runCommand('mount', ['-o', 'remount,ro', mnt]);
  const { bytes, desc } = blob(21, 100_000);
  const add = () => cache.addHeld(Readable.from([bytes]));
  const erofs = (err: unknown) => (err as NodeJS.ErrnoException).code === 'EROFS';
  // Its failure on the disk pauses fills, as a fill's does.
  await assert.rejects(add(), erofs);
  assert.deepEqual(failing, [1500]);
  const pause = cache.diskFailure;
  assert.ok(pause, 'fills paused');
  // During the pause it does not try the disk, and says why it is refused.
  await assert.rejects(add(), (err) => {
    assert.equal(errorKind(err), 'Unavailable', messageOf(err));
    assert.match(messageOf(err), /EROFS/);
    return true;
  });
  const r = await cache.read(
    desc,
    undefined,
    fill(desc, async () => Readable.from([bytes])),
  );
  assert.equal(r.outcome, 'bypass');
  await readAll(r.stream);
  // After the pause it probes the disk: a failure doubles the pause...
  await waitFor(() => Date.now() >= pause.retryAt.getTime(), 10_000, { what: 'the pause over' });
  await assert.rejects(add(), erofs);
  assert.equal(cache.diskFailure?.retryMs, 3000);
  // ...and once the disk takes writes again, the layer is stored and fills go on.
  await runCommand('mount', ['-o', 'remount,rw', mnt]);
  await waitFor(() => Date.now() >= cache.diskFailure!.retryAt.getTime(), 10_000, { what: 'the pause over' });
  const held = await add();
  assert.equal(held.digest, desc.digest);
  assert.equal(cache.diskFailure, undefined);
  assert.equal(recovered, 1);
  assert.deepEqual(failing, [1500], 'told once');
  held.release();
});

test('a blob file in its own dir that the cache does not track is kept if it is the blob, else replaced', async () => {
  // A removal that failed (an eviction or a corrupt copy's discard while the disk was read-only) leaves a
  // file the cache no longer knows; after the disk is back, a fill of that digest meets it.
  await inTempDir(async (dir) => {
    const cache = await BlobCache.open({ dir, maxBytes: 1 << 20 });
    try {
      const stray = async (x: { desc: Descriptor }, bytes: Buffer) => {
        const path = new Layout(dir).blobPath(x.desc.digest);
        await mkdir(dirname(path), { recursive: true });
        await writeFile(path, bytes);
        return path;
      };
      const opens: number[] = [];
      const read = async (x: { bytes: Buffer; desc: Descriptor }) => {
        const r = await cache.read(
          x.desc,
          undefined,
          fill(x.desc, async (offset) => {
            opens.push(offset);
            return Readable.from([x.bytes.subarray(offset)]);
          }),
        );
        return readAll(r.stream);
      };
      const corrupt = blob(7, 4096);
      const path = await stray(corrupt, Buffer.alloc(4096, 8));
      assert.ok((await read(corrupt)).equals(corrupt.bytes));
      assert.ok((await readFile(path)).equals(corrupt.bytes), 'the file is the blob now');
      assert.deepEqual(opens, [0]);
      const again = await cache.read(corrupt.desc, undefined, undefined);
      assert.ok((await readAll(again.stream)).equals(corrupt.bytes));

      const intact = blob(9, 4096);
      await stray(intact, intact.bytes);
      assert.ok((await read(intact)).equals(intact.bytes));
      assert.deepEqual(opens, [0], 'the file was the blob: the source is not asked');
    } finally {
      cache.close();
    }
  });
});
