import assert from 'node:assert/strict';
import { Readable } from 'node:stream';
import { test } from 'node:test';
import { waitFor } from '../../test/helpers/process.ts';
import { deadlineExceeded, notFound, unavailable } from '../errors.ts';
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

/** A pause that lasts until it is cut (by a removal, a new put or close). */
function untilCut(signal: AbortSignal | undefined): Promise<void> {
  return new Promise((_, reject) => signal?.addEventListener('abort', () => reject(signal.reason)));
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

test('prefetch: blob fills are bounded; a spec put again meanwhile cancels its prefetch for the new version; removal cancels', async () => {
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
    const first = fills.signals.at(-1)!;
    // Put again (new content) while its prefetch runs, twice: that prefetch stops at once instead of
    // fetching what the new version may not need, and the newest version is prefetched once it let go.
    store.put('a');
    store.put('a');
    await waitFor(() => events.length === 1, 10_000, { what: 'the prefetch of the old version to stop' });
    assert.equal(events[0], 'cancelled a');
    assert.match(String(first.reason), /prefetch of spec "a" cancelled: a new version was put/);
    await waitFor(() => fills.running === 1, 10_000, { what: 'the fill of the new version' });
    await fills.releaseAll();
    await waitFor(() => events.length === 2, 10_000, { what: 'the prefetch of the new version' });
    assert.deepEqual(events, ['cancelled a', 'completed a']);
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
    retries: 0,
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
    // A rescan (SIGHUP) takes the rest and what failed; what was done already is not done again.
    await p.rescan();
    await waitFor(() => events.length === 4, 10_000, { what: 'the rescan' });
    assert.deepEqual(events.slice(2).sort(), ['completed old', 'failed mid: registry down']);
    assert.deepEqual(planned.sort(), ['mid', 'mid', 'new', 'old']);
  } finally {
    await p.close();
  }
});

test('prefetch: a failed attempt is tried again after growing pauses, then given up until a rescan', async () => {
  const store = new FakeStore();
  /** Attempts still to fail, by spec. */
  const failing = new Map<string, number>();
  const attempts = new Map<string, number>();
  const events: string[] = [];
  const pauses: number[] = [];
  /** Whether a pause lasts until it is cut (by a removal, a new put or close) instead of ending at once. */
  let pausesHold = false;
  const p = new Prefetcher({
    store,
    plan: async (id) => {
      attempts.set(id, (attempts.get(id) ?? 0) + 1);
      const left = failing.get(id) ?? 0;
      if (left > 0) {
        failing.set(id, left - 1);
        throw new Error('registry restarting');
      }
      return { manifestDigest: digestOf(id) as Digest, blobs: [] };
    },
    fill: async () => 'hit',
    retries: 2,
    retryDelayMs: 1000,
    random: () => 0.5,
    sleep: (ms, signal) => {
      pauses.push(ms);
      return pausesHold ? untilCut(signal) : Promise.resolve();
    },
    events: {
      completed: (id) => events.push(`completed ${id}`),
      failed: (id, err, _s, retryInMs) =>
        events.push(
          `failed ${id}: ${(err as Error).message}, ${retryInMs === undefined ? 'given up' : `again in ${retryInMs}`}`,
        ),
      cancelled: (id) => events.push(`cancelled ${id}`),
    },
  });
  await p.start();
  try {
    // Failing every time: two retries after pauses drawn from [0, 1 s] and [0, 2 s], then given up.
    failing.set('a', Number.POSITIVE_INFINITY);
    store.put('a');
    await waitFor(() => events.length === 3, 10_000, { what: 'the attempts of a' });
    assert.deepEqual(events, [
      'failed a: registry restarting, again in 500',
      'failed a: registry restarting, again in 1000',
      'failed a: registry restarting, given up',
    ]);
    assert.deepEqual(pauses, [500, 1000]);
    assert.equal(attempts.get('a'), 3);
    assert.equal(p.pending, 0);
    // Given up means not prefetched: a rescan (SIGHUP) tries that same version again.
    failing.delete('a');
    await p.rescan();
    await waitFor(() => events.length === 4, 10_000, { what: 'the rescan of a' });
    assert.equal(events[3], 'completed a');

    // The upstream is back by the retry: the prefetch completes.
    failing.set('b', 1);
    store.put('b');
    await waitFor(() => events.length === 6, 10_000, { what: 'the retry of b' });
    assert.deepEqual(events.slice(4), ['failed b: registry restarting, again in 500', 'completed b']);

    // Removed while waiting to try again: no further attempt.
    pausesHold = true;
    events.length = 0;
    failing.set('c', Number.POSITIVE_INFINITY);
    store.put('c');
    await waitFor(() => events.length === 1, 10_000, { what: 'the first attempt of c' });
    store.remove('c');
    await waitFor(() => p.pending === 0, 10_000, { what: 'the job of c to end' });
    assert.equal(attempts.get('c'), 1);

    // Put again while waiting: the new version goes at once, without the pause.
    failing.set('d', 1);
    store.put('d');
    await waitFor(() => events.length === 2, 10_000, { what: 'the first attempt of d' });
    store.put('d');
    await waitFor(() => events.length === 3, 10_000, { what: 'the new version of d' });
    assert.deepEqual(events, [
      'failed c: registry restarting, again in 500',
      'failed d: registry restarting, again in 500',
      'completed d',
    ]);
    assert.equal(attempts.get('d'), 2);

    // Stopping while a job waits to try again does not wait for its pause.
    failing.set('e', Number.POSITIVE_INFINITY);
    store.put('e');
    await waitFor(() => events.length === 4, 10_000, { what: 'the first attempt of e' });
    assert.equal(p.pending, 1);
  } finally {
    await p.close();
  }
  assert.equal(attempts.get('e'), 1);
});

test('prefetch: an upstream outage is waited out for as long as the spec is stored, pauses capped at a minute', async () => {
  const store = new FakeStore();
  /** Why planning a spec fails now, by spec. */
  const failing = new Map<string, () => Error>();
  let attempts = 0;
  const pauses: number[] = [];
  const events: string[] = [];
  /** Whether a pause lasts until it is cut instead of ending at once. */
  let hold = false;
  const p = new Prefetcher({
    store,
    plan: async (id) => {
      attempts++;
      const why = failing.get(id);
      if (why) throw why();
      return { manifestDigest: digestOf(id) as Digest, blobs: [] };
    },
    fill: async () => 'hit',
    retries: 2,
    retryDelayMs: 1000,
    random: () => 1,
    sleep: (ms, signal) => {
      pauses.push(ms);
      // The registry comes back after some minutes of pauses.
      if (pauses.length === 12) failing.delete('a');
      return hold ? untilCut(signal) : Promise.resolve();
    },
    events: {
      completed: (id, s) => events.push(`completed ${id} at attempt ${s.attempt}`),
      failed: (id, _err, s, retryInMs) =>
        events.push(`failed ${id} attempt ${s.attempt}${retryInMs === undefined ? ', given up' : ''}`),
    },
  });
  await p.start();
  try {
    failing.set('a', () => unavailable('registry: connection refused'));
    store.put('a');
    await waitFor(() => events.at(-1)?.startsWith('completed') === true, 10_000, { what: 'a to complete' });
    assert.equal(attempts, 13);
    assert.equal(events.length, 13);
    assert.deepEqual(events.slice(0, 2), ['failed a attempt 1', 'failed a attempt 2']);
    assert.ok(!events.some((e) => e.endsWith('given up')), events.join('\n'));
    assert.equal(events.at(-1), 'completed a at attempt 13');
    // Doubling from a second, then at most a minute however long the outage lasts.
    assert.deepEqual(pauses.slice(0, 7), [1000, 2000, 4000, 8000, 16_000, 32_000, 60_000]);
    assert.deepEqual(pauses.slice(7), [60_000, 60_000, 60_000, 60_000, 60_000]);

    // What waiting does not cure (no such image) is still given up after the retries.
    failing.set('b', () => notFound('manifest unknown'));
    store.put('b');
    await waitFor(() => events.at(-1)?.endsWith('given up') === true, 10_000, { what: 'b to be given up' });
    assert.deepEqual(events.slice(13), [
      'failed b attempt 1',
      'failed b attempt 2',
      'failed b attempt 3, given up',
    ]);

    // Removed during an outage: its job ends, with no attempt after that.
    hold = true;
    failing.set('c', () => deadlineExceeded('registry: no answer within 20 s'));
    const before = attempts;
    store.put('c');
    await waitFor(() => events.at(-1) === 'failed c attempt 1', 10_000, { what: 'the first attempt of c' });
    store.remove('c');
    await waitFor(() => p.pending === 0, 10_000, { what: 'the job of c to end' });
    assert.equal(attempts, before + 1);
  } finally {
    await p.close();
  }
});
