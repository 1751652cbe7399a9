import assert from 'node:assert/strict';
import { Readable } from 'node:stream';
import { test } from 'node:test';
import { waitFor } from '../../test/helpers/process.ts';
import type { Blob } from '../oci/blob.ts';
import { type Digest, digestOf } from '../oci/digest.ts';
import type { CacheOutcome } from './blobs/cache.ts';
import { Prefetcher, type PrefetchSummary } from './prefetch.ts';
import type { StoredSpec } from './providers/spec-store.ts';

/** A spec store in memory: put/remove tell the watcher, as the directory watch does. */
class FakeStore {
  readonly versions = new Map<string, string>();
  private listener: ((id: string) => void) | undefined;
  private n = 0;
  put(id: string): void {
    this.versions.set(id, `v${++this.n}`);
    this.listener?.(id);
  }
  remove(id: string): void {
    this.versions.delete(id);
    this.listener?.(id);
  }
  async versionOf(id: string): Promise<string | undefined> {
    return this.versions.get(id);
  }
  async stored(): Promise<StoredSpec[]> {
    return [...this.versions].map(([id, version]) => ({ id, version, mtimeMs: 0 }));
  }
  async watch(onChange: (id: string) => void): Promise<{ close(): void }> {
    this.listener = onChange;
    return { close: () => (this.listener = undefined) };
  }
}

function blobOf(name: string): Blob {
  const bytes = Buffer.from(name);
  return {
    descriptor: { mediaType: 'application/octet-stream', digest: digestOf(bytes), size: bytes.length },
    open: async () => Readable.from([bytes]),
  };
}

/** Fills that wait until let go (or their signal fires). */
class Fills {
  running = 0;
  most = 0;
  readonly waiting: { blob: Blob; go: () => void }[] = [];
  readonly signals: AbortSignal[] = [];
  fill = (blob: Blob, signal: AbortSignal): Promise<CacheOutcome> => {
    this.running++;
    this.most = Math.max(this.most, this.running);
    this.signals.push(signal);
    return new Promise<CacheOutcome>((resolve, reject) => {
      const done = () => {
        this.running--;
        const i = this.waiting.findIndex((w) => w.go === go);
        if (i >= 0) this.waiting.splice(i, 1);
      };
      const go = () => {
        done();
        resolve('miss');
      };
      signal.addEventListener('abort', () => {
        done();
        reject(signal.reason);
      });
      this.waiting.push({ blob, go });
    });
  };
  async releaseAll(): Promise<void> {
    while (this.waiting.length > 0) {
      this.waiting[0]!.go();
      await new Promise((r) => setImmediate(r));
    }
  }
}

test('prefetch: blob fills are bounded; a spec put again meanwhile runs once more; removal cancels', async () => {
  const store = new FakeStore();
  const fills = new Fills();
  const plans: string[] = [];
  const events: string[] = [];
  const summaries = new Map<string, PrefetchSummary>();
  const p = new Prefetcher({
    store,
    plan: async (id) => {
      plans.push(id);
      return { manifestDigest: digestOf(id) as Digest, blobs: [blobOf(`${id}-1`), blobOf(`${id}-2`)] };
    },
    fill: fills.fill,
    concurrency: 1,
    events: {
      completed: (id, s) => {
        events.push(`completed ${id}`);
        summaries.set(id, s);
      },
      cancelled: (id) => events.push(`cancelled ${id}`),
      failed: (id, err) => events.push(`failed ${id} ${String(err)}`),
    },
  });
  await p.start();
  try {
    store.put('a');
    await waitFor(() => fills.running === 1, 10_000, { what: 'the first fill' });
    // Put again while its prefetch runs, twice: one more prefetch once this one ends.
    store.put('a');
    store.put('a');
    await fills.releaseAll();
    await waitFor(() => events.length === 2, 10_000, { what: 'both prefetches of a' });
    assert.deepEqual(events, ['completed a', 'completed a']);
    assert.deepEqual(plans, ['a', 'a']);
    assert.equal(fills.most, 1, 'one fill at a time');
    assert.equal(summaries.get('a')?.bytes, 6);
    assert.deepEqual(summaries.get('a')?.outcomes, { miss: 2 });

    // Removed while its fill runs: that fill's signal fires, the prefetch is reported cancelled.
    store.put('b');
    await waitFor(() => fills.running === 1, 10_000, { what: 'the fill of b' });
    const signal = fills.signals.at(-1)!;
    store.remove('b');
    await waitFor(() => events.length === 3, 10_000, { what: 'the cancel' });
    assert.equal(events[2], 'cancelled b');
    assert.match(String(signal.reason), /prefetch of spec "b" cancelled: the spec was removed/);
    assert.equal(p.pending, 0);
  } finally {
    await p.close();
  }
});

test('prefetch: specs stored before start are prefetched, most recent first and bounded; a failure is reported', async () => {
  const store = new FakeStore();
  for (const id of ['old', 'mid', 'new']) store.put(id);
  const stored = store.stored.bind(store);
  store.stored = async () =>
    (await stored()).map((s, i) => ({ ...s, mtimeMs: i })).sort((a, b) => b.mtimeMs - a.mtimeMs);
  const planned: string[] = [];
  const events: string[] = [];
  const p = new Prefetcher({
    store,
    plan: async (id) => {
      planned.push(id);
      if (id === 'mid') throw new Error('registry down');
      return { manifestDigest: digestOf(id) as Digest, blobs: [] };
    },
    fill: async () => 'hit',
    startupSpecs: 2,
    events: {
      completed: (id) => events.push(`completed ${id}`),
      failed: (id, err) => events.push(`failed ${id}: ${(err as Error).message}`),
    },
  });
  await p.start();
  try {
    await waitFor(() => events.length === 2, 10_000, { what: 'the start-up prefetches' });
    assert.deepEqual(planned.sort(), ['mid', 'new']);
    assert.deepEqual(events.sort(), ['completed new', 'failed mid: registry down']);
    // A rescan (SIGHUP) takes the rest; what was done already is not done again.
    await p.rescan();
    await waitFor(() => events.length === 3, 10_000, { what: 'the rescan' });
    assert.equal(events.at(-1), 'completed old');
  } finally {
    await p.close();
  }
});
