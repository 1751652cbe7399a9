// Dockerfile analyses on worker threads (dockerfile-worker.ts), bounded: at most `maxRunning` at once,
// `maxQueued` waiting (more are refused), and `timeoutMs` each, after which its worker is ended. A
// parse of a Dockerfile at the size cap takes a few hundred milliseconds; on the builder's event loop
// every request, status stream and health check waited that long.
import { Worker } from 'node:worker_threads';
import {
  deadlineExceeded,
  errorKind,
  internal,
  messageOf,
  resourceExhausted,
  StrataError,
  unavailable,
} from '../errors.ts';
import { byName } from './build-key.ts';
import { checkDockerfileSize, type DockerfileAnalysis } from './dockerfile.ts';
import type { AnalysisAnswer, AnalysisJob } from './dockerfile-worker.ts';

export interface AnalyzerOptions {
  /** Analyses at once, each on a worker thread of its own. */
  maxRunning?: number;
  /** Analyses that may wait for a worker; more are refused (ResourceExhausted). */
  maxQueued?: number;
  /** How long an analysis may run on its worker before the worker is ended (DeadlineExceeded). */
  timeoutMs?: number;
  /** The worker's module; tests give one of their own. */
  script?: URL;
  /** The clock (ms) deciding when a failed analysis is tried again; tests give one of their own. */
  now?: () => number;
  /** How long a worker may sit idle before it is ended (its thread's memory goes with it). */
  idleMs?: number;
}

/** Two cores' worth: the builder's other work (git, buildah) needs the machine too. */
const MAX_RUNNING = 2;
/** Each waiting analysis holds its Dockerfile (at most 256 KiB). */
const MAX_QUEUED = 16;
/** About ten times the longest parse measured at the size cap, on a busy machine. */
const TIMEOUT_MS = 5_000;
/**
 * Sets of build args whose analyses are kept per snapshot: the caller's, so not every set anyone sends.
 * Past it the least recently asked for goes, so a ninth set does not cost the eight in use their analyses.
 */
const KEPT_PER_OWNER = 8;
/**
 * How long a failure that may be the machine's (a time limit, a worker that died) is kept before the
 * commit is analysed again: a snapshot lives as long as the builder keeps using it, so kept for good, a
 * moment of overload would fail that commit until the builder restarted.
 */
const RETRY_AFTER_MS = 60_000;
/**
 * An idle worker is ended after this long: one that parsed a Dockerfile at the size cap keeps tens of MB
 * of heap, which the builder would otherwise hold until it stops. Builds that come in bursts reuse it.
 */
const IDLE_MS = 60_000;

/** An analysis kept for an owner, and until when (ms) if it failed in a way that may pass. */
interface Kept {
  analysis: Promise<DockerfileAnalysis>;
  until?: number;
}

interface Waiting {
  text: string;
  buildArgs: ReadonlyMap<string, string>;
  resolve(analysis: DockerfileAnalysis): void;
  reject(err: unknown): void;
}

export class DockerfileAnalyzer {
  readonly #maxRunning: number;
  readonly #maxQueued: number;
  readonly #timeoutMs: number;
  readonly #script: URL;
  readonly #now: () => number;
  readonly #idleMs: number;
  /** The timer that ends each idle worker. */
  readonly #retire = new Map<Worker, NodeJS.Timeout>();
  /** Every worker started and not yet ended. */
  readonly #all = new Set<Worker>();
  /** Workers without an analysis, kept for the next (unreferenced, so they hold no process open). */
  readonly #idle: Worker[] = [];
  /** Workers busy with an analysis, and how to end one (its job fails with `err`). */
  readonly #busy = new Map<Worker, (err: unknown) => Promise<void>>();
  readonly #queue: Waiting[] = [];
  /** Analyses made for each owner (a commit's snapshot), by build args, least recently asked for first. */
  readonly #kept = new WeakMap<object, Map<string, Kept>>();
  #ids = 0;
  #closed = false;

  constructor(o: AnalyzerOptions = {}) {
    this.#maxRunning = Math.max(1, o.maxRunning ?? MAX_RUNNING);
    this.#maxQueued = Math.max(0, o.maxQueued ?? MAX_QUEUED);
    this.#timeoutMs = o.timeoutMs ?? TIMEOUT_MS;
    this.#script = o.script ?? new URL('./dockerfile-worker.ts', import.meta.url);
    this.#now = o.now ?? Date.now;
    this.#idleMs = o.idleMs ?? IDLE_MS;
  }

  /** Worker threads alive (busy or idle). */
  get threads(): number {
    return this.#all.size;
  }

  /** analyzeDockerfile's answer, worked out on a worker thread. */
  analyze(text: string, buildArgs: ReadonlyMap<string, string> = new Map()): Promise<DockerfileAnalysis> {
    if (this.#closed) return Promise.reject(unavailable('Dockerfile analysis has stopped'));
    try {
      checkDockerfileSize(text);
    } catch (err) {
      return Promise.reject(err);
    }
    if (this.#busy.size >= this.#maxRunning && this.#queue.length >= this.#maxQueued) {
      return Promise.reject(
        resourceExhausted(
          `Dockerfile analysis is busy (${this.#busy.size} running, ${this.#queue.length} waiting); try again later`,
        ),
      );
    }
    return new Promise((resolve, reject) => {
      // Copied: a caller's map may change while the analysis waits, and the copy crosses to the worker.
      this.#queue.push({ text, buildArgs: new Map(buildArgs), resolve, reject });
      this.#pump();
    });
  }

  /**
   * analyze, once per `owner` (a commit's snapshot) and set of build args: the requests that plan a
   * commit share its analysis. A verdict on the Dockerfile (an answer, InvalidArgument) is kept with the
   * owner; a failure that may be the machine's (DeadlineExceeded, a worker that died) for RETRY_AFTER_MS;
   * a refusal for a full queue or a shutdown says nothing of it and is not kept.
   */
  analyzeOnce(
    owner: object,
    text: string,
    buildArgs: ReadonlyMap<string, string>,
  ): Promise<DockerfileAnalysis> {
    const kept = this.#kept.get(owner) ?? new Map<string, Kept>();
    this.#kept.set(owner, kept);
    const key = JSON.stringify([...buildArgs].sort(([a], [b]) => byName(a, b)));
    const known = kept.get(key);
    // Taken out and put back last: a Map keeps its keys in the order they were set.
    kept.delete(key);
    if (known && (known.until === undefined || this.#now() < known.until)) {
      kept.set(key, known);
      return known.analysis;
    }
    const entry: Kept = { analysis: this.analyze(text, buildArgs) };
    for (const old of kept.keys()) {
      if (kept.size < KEPT_PER_OWNER) break;
      kept.delete(old);
    }
    kept.set(key, entry);
    entry.analysis.catch((err: unknown) => {
      const kind = errorKind(err);
      if (kind === 'InvalidArgument' || kept.get(key) !== entry) return;
      if (kind === 'ResourceExhausted' || kind === 'Unavailable') kept.delete(key);
      else entry.until = this.#now() + RETRY_AFTER_MS;
    });
    return entry.analysis;
  }

  /** Ends every worker; analyses under way or waiting fail (Unavailable). */
  async close(): Promise<void> {
    this.#closed = true;
    const stopped = unavailable('Dockerfile analysis has stopped');
    for (const job of this.#queue.splice(0)) job.reject(stopped);
    const ending = [...this.#busy.values()].map((end) => end(stopped));
    this.#idle.length = 0;
    for (const timer of this.#retire.values()) clearTimeout(timer);
    this.#retire.clear();
    const all = [...this.#all];
    this.#all.clear();
    await Promise.all([...ending, ...all.map((w) => w.terminate())]);
  }

  #pump(): void {
    while (!this.#closed && this.#busy.size < this.#maxRunning && this.#queue.length > 0) {
      const job = this.#queue.shift() as Waiting;
      let w: Worker;
      try {
        w = this.#takeIdle() ?? this.#spawn();
      } catch (err) {
        // No thread (ERR_WORKER_INIT_FAILED: out of threads or memory). The job fails rather than being
        // lost, and this runs in an answer's or an ending's handler, which must not throw.
        job.reject(internal(`Dockerfile analysis cannot start a worker: ${messageOf(err)}`));
        continue;
      }
      this.#run(job, w);
    }
  }

  #takeIdle(): Worker | undefined {
    const w = this.#idle.pop();
    if (w) {
      clearTimeout(this.#retire.get(w));
      this.#retire.delete(w);
    }
    return w;
  }

  /** Keeps `w` for the next analysis, for #idleMs at most. */
  #keepIdle(w: Worker): void {
    // Idle, it must not keep the process alive.
    w.unref();
    this.#idle.push(w);
    const timer = setTimeout(() => {
      this.#retire.delete(w);
      const i = this.#idle.indexOf(w);
      if (i < 0) return;
      this.#idle.splice(i, 1);
      this.#all.delete(w);
      void w.terminate().catch(() => {});
    }, this.#idleMs);
    timer.unref();
    this.#retire.set(w, timer);
  }

  #spawn(): Worker {
    const w = new Worker(this.#script);
    this.#all.add(w);
    w.once('exit', () => {
      this.#all.delete(w);
      const i = this.#idle.indexOf(w);
      if (i >= 0) this.#idle.splice(i, 1);
    });
    return w;
  }

  #run(job: Waiting, w: Worker): void {
    const id = ++this.#ids;
    w.ref();
    let timer: NodeJS.Timeout | undefined;
    let ending: Promise<void> | undefined;
    const unlisten = () => {
      clearTimeout(timer);
      w.off('message', onMessage);
      w.off('error', onError);
      w.off('exit', onExit);
    };
    // The worker cannot be trusted with another analysis. It keeps its place until it has ended, so
    // no more than maxRunning threads ever work at once; then the job fails and the next gets the place.
    const end = (err: unknown) => {
      ending ??= (async () => {
        unlisten();
        this.#all.delete(w);
        await w.terminate().catch(() => {});
        this.#busy.delete(w);
        job.reject(err);
        this.#pump();
      })();
      return ending;
    };
    const onMessage = (a: AnalysisAnswer) => {
      if (a.id !== id) return;
      unlisten();
      this.#busy.delete(w);
      if ('analysis' in a) job.resolve(a.analysis);
      else
        job.reject(a.error.kind ? new StrataError(a.error.kind, a.error.message) : internal(a.error.message));
      if (this.#closed) return;
      this.#keepIdle(w);
      this.#pump();
    };
    const onError = (err: unknown) => void end(internal(`Dockerfile analysis failed: ${messageOf(err)}`));
    const onExit = (code: number) =>
      void end(internal(`Dockerfile analysis worker exited with code ${code}`));
    w.on('message', onMessage);
    w.once('error', onError);
    w.once('exit', onExit);
    timer = setTimeout(
      () => void end(deadlineExceeded(`Dockerfile analysis did not finish within ${this.#timeoutMs} ms`)),
      this.#timeoutMs,
    );
    this.#busy.set(w, end);
    const message: AnalysisJob = { id, text: job.text, buildArgs: job.buildArgs };
    w.postMessage(message);
  }
}
