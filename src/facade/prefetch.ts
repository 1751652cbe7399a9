// Prefetch: when a spec reaches the own spec store, compose it and fill the disk blob cache with every blob
// of its image that comes over the network, before any client asks, so the node's first pull is served
// from the cache. Specs are noticed through the store's watcher, at start (the most recent ones, bounded)
// and by rescan() (SIGHUP). One job per spec at a time, blob fills bounded across all jobs, each joining a
// fill already in flight (the cache's single-flight). Removing a spec cancels its job, and so does putting
// it again (the new version is prefetched once the old one's job has let go): fills only the job holds
// are abandoned, fills a client or another spec's job reads go on. A failed attempt is tried again after
// growing pauses: an outage (a registry unreachable, silent or answering 5xx or 429) for as long as the
// spec is stored, since the workspace it was put for may start any moment and the registry blinking for a
// minute must not make its first pull cold; the pause grows to a minute at most, so a job costs one
// composition a minute while it waits, and removing the spec ends it. Failures waiting does not cure (no
// such image, access denied, a bad spec) are tried a bounded number of times; once those are used up the
// spec counts as not prefetched, so the next rescan or put tries it afresh.
import { aborted, type ErrorKind, errorKind } from '../errors.ts';
import { Limiter } from '../limiter.ts';
import type { Blob } from '../oci/blob.ts';
import type { Digest } from '../oci/digest.ts';
import { backoffDelay, sleep as realSleep, type Sleep } from '../registry/retry.ts';
import type { CacheOutcome } from './blobs/cache.ts';
import type { StoredSpec } from './providers/spec-store.ts';
import { TtlLru } from './providers/ttl-lru.ts';

/** What a prefetch needs of the spec store (SpecStore fits). */
export interface PrefetchStore {
  versionOf(id: string): Promise<string | undefined>;
  stored(): Promise<StoredSpec[]>;
  watch(onChange: (id: string) => void): Promise<{ close(): void }>;
}

export interface PrefetchSummary {
  manifestDigest?: Digest;
  blobs: number;
  /**
   * Blobs per outcome: miss (fetched by this prefetch), joined, hit (cached already), bypass (no room, or
   * a failing disk).
   */
  outcomes: Partial<Record<CacheOutcome, number>>;
  /** Bytes of the blobs this prefetch fetched (misses). */
  bytes: number;
  failedBlobs: number;
  durationMs: number;
  /** Which attempt of the job this was (1 for the first; each retry counts one more). */
  attempt: number;
}

export interface PrefetchEvents {
  /** An attempt started (each attempt of a job that is tried again starts and ends on its own). */
  started?(id: string): void;
  completed?(id: string, summary: PrefetchSummary): void;
  /**
   * An attempt failed; `retryInMs` when another one follows after that pause. An outage may fail many
   * attempts of one job: `summary.attempt` tells the first (worth a warning) from the ones after it.
   */
  failed?(id: string, err: unknown, summary: PrefetchSummary, retryInMs?: number): void;
  /** An attempt was cancelled: `reason` says why (the spec was removed or put again, the facade stops). */
  cancelled?(id: string, summary: PrefetchSummary, reason: unknown): void;
  /** A spec that could not be queued (the queue is full); a later put or rescan tries again. */
  skipped?(id: string): void;
  /** The store could not be listed or watched. */
  storeError?(err: unknown): void;
}

export interface PrefetcherOptions {
  store: PrefetchStore;
  /** Composes spec `id` and lists the network blobs of its image (FacadeService.networkBlobs). */
  plan(id: string): Promise<{ manifestDigest: Digest; blobs: Blob[] }>;
  /** Fills the cache with a blob (BlobCache.prefetch). */
  fill(blob: Blob, signal: AbortSignal): Promise<CacheOutcome>;
  /** Blob fills at once, over all specs (default 4). */
  concurrency?: number;
  /** Specs prefetched at start, most recently put first (default 100). */
  startupSpecs?: number;
  /** Specs waiting for their turn at most (default 1024). */
  maxQueued?: number;
  /**
   * Attempts after a failed one, when it failed for a reason waiting does not cure (default 3). An
   * outage (Unavailable, DeadlineExceeded, ResourceExhausted) is tried again while the spec is stored.
   */
  retries?: number;
  /**
   * The pause before the first retry is drawn from [0, this] (default 2 s); the range doubles for each
   * further one, up to a minute. Drawn, so specs that failed together do not all come back at once.
   */
  retryDelayMs?: number;
  events?: PrefetchEvents;
  /** Test seams: the pause and the jitter source. */
  sleep?: Sleep;
  random?: () => number;
}

/** The longest pause between two attempts, however many came before. */
const MAX_RETRY_DELAY_MS = 60_000;

/** Failures of an upstream that is down, slow or shedding load: they end by themselves. */
const OUTAGE: ReadonlySet<ErrorKind | undefined> = new Set([
  'Unavailable',
  'DeadlineExceeded',
  'ResourceExhausted',
]);

interface Job {
  id: string;
  version: string;
  controller: AbortController;
  /** Set when the spec was put again while this job ran: the version prefetched once this job ends. */
  again?: string;
}

export class Prefetcher {
  private readonly o: PrefetcherOptions;
  private readonly events: PrefetchEvents;
  private readonly slots: Limiter;
  private readonly jobSlots: Limiter;
  /** The version of each spec last prefetched or being prefetched (bounded). */
  private readonly known = new TtlLru<string, string>({
    ttlMs: Number.POSITIVE_INFINITY,
    maxEntries: 16_384,
  });
  private readonly jobs = new Map<string, Job>();
  private readonly running = new Set<Promise<void>>();
  private watcher: { close(): void } | undefined;
  private closed = false;

  constructor(options: PrefetcherOptions) {
    this.o = options;
    this.events = options.events ?? {};
    const n = options.concurrency ?? 4;
    this.slots = new Limiter(n);
    // Compositions are cheap next to fills; this keeps a burst of puts from composing all at once.
    this.jobSlots = new Limiter(n);
  }

  /** Specs being prefetched or waiting. */
  get pending(): number {
    return this.jobs.size;
  }

  /** Watches the store and prefetches the most recent specs already there (in the background). */
  async start(): Promise<void> {
    try {
      this.watcher = await this.o.store.watch((id) => void this.changed(id));
    } catch (err) {
      this.events.storeError?.(err);
    }
    void this.scan(this.o.startupSpecs ?? 100);
  }

  /** Looks at every stored spec: new and changed ones are prefetched, removed ones cancelled (SIGHUP). */
  async rescan(): Promise<void> {
    await this.scan(Number.POSITIVE_INFINITY);
  }

  private async scan(limit: number): Promise<void> {
    let stored: StoredSpec[];
    try {
      stored = await this.o.store.stored();
    } catch (err) {
      this.events.storeError?.(err);
      return;
    }
    const present = new Set(stored.map((s) => s.id));
    for (const id of [...this.jobs.keys()]) if (!present.has(id)) this.removed(id);
    for (const s of stored.slice(0, limit)) this.put(s.id, s.version);
  }

  /** A watcher event: the spec was put or removed. */
  private async changed(id: string): Promise<void> {
    let version: string | undefined;
    try {
      version = await this.o.store.versionOf(id);
    } catch (err) {
      this.events.storeError?.(err);
      return;
    }
    if (version === undefined) this.removed(id);
    else this.put(id, version);
  }

  private put(id: string, version: string): void {
    if (this.closed || this.known.get(id) === version) return;
    const job = this.jobs.get(id);
    if (job) {
      // The old version's blobs may be ones the new one does not need: its job stops now rather than
      // fetching them all. What both need loses little: a fill a client reads goes on, and one only this
      // job held keeps its bytes for the new version's fill to resume from.
      job.again = version;
      this.known.set(id, version);
      job.controller.abort(
        aborted(`prefetch of spec ${JSON.stringify(id)} cancelled: a new version was put`),
      );
      return;
    }
    if (this.jobs.size >= (this.o.maxQueued ?? 1024)) {
      this.events.skipped?.(id);
      return;
    }
    this.known.set(id, version);
    this.run({ id, version, controller: new AbortController() });
  }

  private removed(id: string): void {
    this.known.delete(id);
    const job = this.jobs.get(id);
    if (!job) return;
    job.again = undefined;
    job.controller.abort(aborted(`prefetch of spec ${JSON.stringify(id)} cancelled: the spec was removed`));
  }

  private run(job: Job): void {
    this.jobs.set(job.id, job);
    const p = this.prefetch(job).finally(() => {
      this.running.delete(p);
      if (this.jobs.get(job.id) === job) this.jobs.delete(job.id);
      if (job.again !== undefined && !this.closed) {
        this.run({ id: job.id, version: job.again, controller: new AbortController() });
      }
    });
    this.running.add(p);
  }

  /** The job's attempts: the first, and while they fail the retries, each after its pause. */
  private async prefetch(job: Job): Promise<void> {
    const retries = this.o.retries ?? 3;
    const policy = { baseDelayMs: this.o.retryDelayMs ?? 2000, maxDelayMs: MAX_RETRY_DELAY_MS };
    for (let attempt = 1; ; attempt++) {
      const failure = await this.attempt(job, attempt);
      if (failure === undefined) return;
      // A version put meanwhile goes next instead.
      const last = job.again !== undefined || (attempt > retries && !OUTAGE.has(errorKind(failure.err)));
      const delay = last ? undefined : backoffDelay(policy, attempt, this.o.random);
      this.events.failed?.(job.id, failure.err, failure.summary, delay);
      if (delay === undefined) {
        // Given up: the next rescan (SIGHUP) tries this version again, as a new put does.
        if (this.known.get(job.id) === job.version) this.known.delete(job.id);
        return;
      }
      try {
        await (this.o.sleep ?? realSleep)(delay, job.controller.signal);
      } catch {
        return; // removed, stopping, or put again (run() starts that version)
      }
    }
  }

  /** One attempt; reports its end unless it failed, which it returns. */
  private async attempt(
    job: Job,
    attempt: number,
  ): Promise<{ err: unknown; summary: PrefetchSummary } | undefined> {
    const { id, controller } = job;
    const signal = controller.signal;
    const summary: PrefetchSummary = {
      blobs: 0,
      outcomes: {},
      bytes: 0,
      failedBlobs: 0,
      durationMs: 0,
      attempt,
    };
    let started = 0;
    try {
      await this.jobSlots.run(async () => {
        started = Date.now();
        this.events.started?.(id);
        const plan = await this.o.plan(id);
        signal.throwIfAborted();
        summary.manifestDigest = plan.manifestDigest;
        summary.blobs = plan.blobs.length;
        let firstError: unknown;
        await Promise.all(
          plan.blobs.map(async (blob) => {
            try {
              const outcome = await this.slots.run(() => this.o.fill(blob, signal), signal);
              summary.outcomes[outcome] = (summary.outcomes[outcome] ?? 0) + 1;
              if (outcome === 'miss') summary.bytes += blob.descriptor.size;
            } catch (err) {
              summary.failedBlobs++;
              firstError ??= err;
            }
          }),
        );
        signal.throwIfAborted();
        if (summary.failedBlobs > 0) throw firstError;
      }, signal);
      summary.durationMs = Date.now() - started;
      this.events.completed?.(id, summary);
      return undefined;
    } catch (err) {
      summary.durationMs = started === 0 ? 0 : Date.now() - started;
      if (!signal.aborted) return { err, summary };
      // Cancelled before its turn came: never started, so nothing to report.
      if (started !== 0) this.events.cancelled?.(id, summary, signal.reason);
      return undefined;
    }
  }

  /** Cancels every job and waits for them to let go of their fills. */
  async close(): Promise<void> {
    this.closed = true;
    this.watcher?.close();
    for (const job of this.jobs.values()) {
      job.again = undefined;
      job.controller.abort(aborted('prefetch stopped: the facade is stopping'));
    }
    await Promise.allSettled([...this.running]);
  }
}
