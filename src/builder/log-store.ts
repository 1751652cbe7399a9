// Every build's output, kept on disk per build id: bounded per build and in number of builds, replayed
// from the start and then followed live by any number of readers, ended when the build ends. A build's
// record (its BuildInfo and reason) sits beside its log, so finished builds are still listed and their
// logs still served after a restart. Credentials never reach the disk: lines are scrubbed as written.
import { type FileHandle, mkdir, open, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { StringDecoder } from 'node:string_decoder';
import { invalidArgument, notFound } from '../errors.ts';

export type BuildPhase = 'queued' | 'running' | 'succeeded' | 'failed';

export interface BuildRecord {
  id: string;
  ref: string;
  baseRef: string;
  phase: BuildPhase;
  /** Unix ms: when the build was asked for, then when it started running. */
  startedAt: number;
  finishedAt?: number;
  /** Why it builds, in plain words. */
  reason: string;
  /** The outcome's message once finished. */
  message?: string;
}

/** Replaces every occurrence of the given strings with `***`. */
export class Censor {
  private readonly words: string[];
  constructor(words: Iterable<string>) {
    // Longest first, so a secret containing another is removed whole.
    this.words = [...new Set([...words].filter((w) => w.length > 0))].sort((a, b) => b.length - a.length);
  }
  apply(text: string): string {
    let out = text;
    for (const w of this.words) if (out.includes(w)) out = out.split(w).join('***');
    return out;
  }
  with(words: Iterable<string>): Censor {
    return new Censor([...this.words, ...words]);
  }
  get empty(): boolean {
    return this.words.length === 0;
  }
}

/** Bytes kept per build log unless configured otherwise. */
export const DEFAULT_LOG_BYTES_PER_BUILD = 8 << 20;
/** Finished builds whose logs are kept unless configured otherwise. */
export const DEFAULT_KEPT_LOGS = 500;

export interface LogStoreOptions {
  dir: string;
  /** Bytes kept per build log; later lines are dropped (default DEFAULT_LOG_BYTES_PER_BUILD). */
  maxBytesPerBuild?: number;
  /** Finished builds whose logs are kept (default DEFAULT_KEPT_LOGS); the oldest go first. */
  keepBuilds?: number;
}

const ID_RE = /^[A-Za-z0-9-]{1,64}$/;
const READ_CHUNK = 64 * 1024;

class LiveLog {
  record: BuildRecord;
  readonly fh: FileHandle;
  written = 0;
  /** Bytes accepted, written or not yet: what the bound counts. */
  accepted = 0;
  truncated = false;
  done = false;
  private chain: Promise<void> = Promise.resolve();
  private waiters: Array<() => void> = [];
  readonly max: number;

  constructor(record: BuildRecord, fh: FileHandle, max: number) {
    this.record = record;
    this.fh = fh;
    this.max = max;
  }

  notify(): void {
    const w = this.waiters;
    this.waiters = [];
    for (const fn of w) fn();
  }

  changed(signal?: AbortSignal): Promise<void> {
    return new Promise((resolve) => {
      const done = () => {
        signal?.removeEventListener('abort', done);
        resolve();
      };
      signal?.addEventListener('abort', done, { once: true });
      this.waiters.push(done);
    });
  }

  /** Queues bytes; ordered, and readers see them once they are on disk. */
  write(bytes: Buffer): Promise<void> {
    this.accepted += bytes.length;
    this.chain = this.chain.then(async () => {
      await this.fh.write(bytes, 0, bytes.length, this.written);
      this.written += bytes.length;
      this.notify();
    });
    return this.chain;
  }

  flushed(): Promise<void> {
    return this.chain;
  }
}

/** A build's log as its writer sees it. */
export interface BuildLog {
  readonly id: string;
  /** Appends one line (a newline is added); scrubbed of the build's secrets. */
  line(text: string): void;
  /** Adds secrets to scrub from later lines. */
  addSecrets(words: Iterable<string>): void;
  update(patch: Partial<BuildRecord>): void;
  record(): BuildRecord;
  /** Marks the build finished: followers end once they have read everything. */
  finish(patch: Partial<BuildRecord>): Promise<void>;
}

export class LogStore {
  private readonly dir: string;
  private readonly max: number;
  private readonly keep: number;
  private readonly live = new Map<string, LiveLog>();
  /** Finished builds on disk, oldest first. */
  private readonly finished = new Map<string, BuildRecord>();

  private constructor(options: LogStoreOptions) {
    this.dir = options.dir;
    this.max = options.maxBytesPerBuild ?? DEFAULT_LOG_BYTES_PER_BUILD;
    this.keep = options.keepBuilds ?? DEFAULT_KEPT_LOGS;
  }

  /** Opens the store; builds a previous process left unfinished are recorded as failed. */
  static async open(options: LogStoreOptions): Promise<LogStore> {
    const store = new LogStore(options);
    await mkdir(options.dir, { recursive: true, mode: 0o700 });
    const records: BuildRecord[] = [];
    for (const name of await readdir(options.dir)) {
      if (!name.endsWith('.json')) continue;
      try {
        const r = JSON.parse(await readFile(join(options.dir, name), 'utf8')) as BuildRecord;
        if (!ID_RE.test(r.id)) continue;
        if (r.phase === 'queued' || r.phase === 'running') {
          r.phase = 'failed';
          r.message = 'the builder stopped during this build';
          r.finishedAt ??= Date.now();
          await writeFile(join(options.dir, name), JSON.stringify(r));
        }
        records.push(r);
      } catch {
        // A record cut short by a crash: its log is unreadable as a build; leave it to pruning.
      }
    }
    records.sort((a, b) => (a.finishedAt ?? 0) - (b.finishedAt ?? 0));
    for (const r of records) store.finished.set(r.id, r);
    await store.prune();
    return store;
  }

  private path(id: string, ext: 'log' | 'json'): string {
    return join(this.dir, `${id}.${ext}`);
  }

  /** Starts a build's log; `tee` gets every line as written (scrubbed), e.g. to share it. */
  async create(
    record: BuildRecord,
    secrets: Iterable<string> = [],
    tee?: (line: string) => void,
  ): Promise<BuildLog> {
    if (!ID_RE.test(record.id)) throw invalidArgument(`invalid build id ${record.id}`);
    const fh = await open(this.path(record.id, 'log'), 'w', 0o600);
    await writeFile(this.path(record.id, 'json'), JSON.stringify(record), { mode: 0o600 });
    let censor = new Censor(secrets);
    const live = new LiveLog(record, fh, this.max);
    this.live.set(record.id, live);
    const store = this;
    return {
      id: record.id,
      line(text) {
        if (live.done || live.truncated) return;
        const clean = censor.apply(text);
        let bytes = Buffer.from(`${clean}\n`);
        if (live.accepted + bytes.length > live.max) {
          live.truncated = true;
          bytes = Buffer.from(`[log truncated: more than ${live.max} bytes]\n`);
        }
        void live.write(bytes);
        tee?.(live.truncated ? bytes.toString('utf8').trimEnd() : clean);
      },
      addSecrets(words) {
        censor = censor.with(words);
      },
      update(patch) {
        live.record = { ...live.record, ...patch };
        live.notify();
      },
      record: () => live.record,
      async finish(patch) {
        live.record = { ...live.record, ...patch, finishedAt: Date.now() };
        await live.flushed();
        live.done = true;
        await writeFile(store.path(record.id, 'json'), JSON.stringify(live.record), { mode: 0o600 });
        await live.fh.close();
        store.live.delete(record.id);
        store.finished.set(record.id, live.record);
        live.notify();
        await store.prune();
      },
    };
  }

  private async prune(): Promise<void> {
    while (this.finished.size > this.keep) {
      const oldest = this.finished.keys().next().value as string;
      this.finished.delete(oldest);
      await rm(this.path(oldest, 'log'), { force: true });
      await rm(this.path(oldest, 'json'), { force: true });
    }
  }

  /** A build's record, live or finished. */
  get(id: string): BuildRecord | undefined {
    return this.live.get(id)?.record ?? this.finished.get(id);
  }

  /** Live builds, then finished ones (newest first). */
  records(): BuildRecord[] {
    return [...[...this.live.values()].map((l) => l.record), ...[...this.finished.values()].reverse()];
  }

  /** The build of `ref`: a live one first, else the last that finished. */
  findByRef(ref: string): BuildRecord | undefined {
    for (const l of this.live.values()) if (l.record.ref === ref) return l.record;
    let found: BuildRecord | undefined;
    for (const r of this.finished.values()) if (r.ref === ref) found = r;
    return found;
  }

  /**
   * The log from its first byte, then what is written after, until the build has finished and all of
   * it was read. `censor` (when given) is applied line by line.
   */
  async *follow(id: string, options: { signal?: AbortSignal; censor?: Censor } = {}): AsyncGenerator<Buffer> {
    const live = this.live.get(id);
    if (!live && !this.finished.has(id)) throw notFound(`build ${id} not found`);
    const fh = live
      ? await open(this.path(id, 'log'), 'r')
      : await open(this.path(id, 'log'), 'r').catch(() => {
          throw notFound(`the log of build ${id} is gone`);
        });
    const censor = options.censor && !options.censor.empty ? options.censor : undefined;
    let pending = '';
    // A character whose bytes straddle two reads stays whole.
    const decoder = new StringDecoder('utf8');
    try {
      let pos = 0;
      const buf = Buffer.alloc(READ_CHUNK);
      for (;;) {
        const end = live ? live.written : (await fh.stat()).size;
        while (pos < end) {
          const { bytesRead } = await fh.read(buf, 0, Math.min(READ_CHUNK, end - pos), pos);
          if (bytesRead === 0) break;
          pos += bytesRead;
          const chunk = Buffer.from(buf.subarray(0, bytesRead));
          if (!censor) {
            yield chunk;
            continue;
          }
          pending += decoder.write(chunk);
          const cut = pending.lastIndexOf('\n');
          if (cut >= 0) {
            yield Buffer.from(censor.apply(pending.slice(0, cut + 1)));
            pending = pending.slice(cut + 1);
          }
        }
        if (!live) break;
        if (pos < live.written) continue;
        if (live.done) break;
        if (options.signal?.aborted) return;
        await live.changed(options.signal);
      }
      if (censor) pending += decoder.end();
      if (pending && censor) yield Buffer.from(censor.apply(pending));
    } finally {
      await fh.close();
    }
  }
}
