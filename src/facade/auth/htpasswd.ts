// Basic credentials checked against an htpasswd file of bcrypt hashes (`user:$2y$…`, what
// `htpasswd -B` writes and docker-registry reads). bcrypt is slow by design, so a successful check is
// remembered for a short while (keyed by a hash of user, password and stored hash: a changed password or
// file invalidates it), and at most a few checks run at once, on one worker thread, with a bounded wait
// behind them shared fairly among clients (fair-turns.ts), so a flood of wrong passwords costs the service
// at most that thread's core, never stalls the event loop that serves every other request, and holds up
// other clients' checks by about one check each. An unknown user is checked against a stand-in hash as
// costly as the file's, so how long a refusal takes does not tell which user names exist.
import { createHash, randomBytes } from 'node:crypto';
import { Worker } from 'node:worker_threads';
import { LRUCache } from 'lru-cache';
import { internal, invalidArgument } from '../../errors.ts';
import type { BcryptAnswer, BcryptJob } from './bcrypt-worker.ts';
import { clientLine, FairTurns } from './fair-turns.ts';

const MAX_USERS = 100_000;
const CHECKS_AT_ONCE = 2;
const MAX_WAITING = 256;

/** user → bcrypt hash. Other hash schemes (MD5 `$apr1$`, SHA1, crypt) are refused, as docker-registry does. */
export function parseHtpasswd(text: string, where: string): Map<string, string> {
  const users = new Map<string, string>();
  const lines = text.split(/\r?\n/);
  for (let i = 0; i < lines.length; i++) {
    const line = lines[i]!.trim();
    if (line === '' || line.startsWith('#')) continue;
    const colon = line.indexOf(':');
    if (colon <= 0) throw invalidArgument(`${where}:${i + 1}: want user:hash`);
    const user = line.slice(0, colon);
    const hash = line.slice(colon + 1);
    const bcryptHash = /^\$2[aby]\$(\d\d)\$[./A-Za-z0-9]{53}$/.exec(hash);
    if (!bcryptHash) {
      throw invalidArgument(`${where}:${i + 1}: user ${user}: only bcrypt hashes are accepted (htpasswd -B)`);
    }
    // bcrypt refuses other costs when checking, which would answer the user's every request with a 500.
    const cost = Number(bcryptHash[1]);
    if (cost < 4 || cost > 31) {
      throw invalidArgument(
        `${where}:${i + 1}: user ${user}: bcrypt cost ${bcryptHash[1]} is not within 04-31`,
      );
    }
    if (users.has(user)) throw invalidArgument(`${where}:${i + 1}: user ${user} appears twice`);
    users.set(user, hash);
    if (users.size > MAX_USERS) throw invalidArgument(`${where}: more than ${MAX_USERS} users`);
  }
  return users;
}

export interface HtpasswdCheckerOptions {
  /** How long a successful check is remembered (default 60 s). */
  cacheMs?: number;
  cacheEntries?: number;
  /** How many checks may wait for the worker, all clients together (default 256). */
  maxWaiting?: number;
  /** Test seam: the bcrypt check of a password against a hash (default: on the worker thread). */
  compare?(password: string, hash: string): Promise<boolean>;
}

/** Who asks for a check: the client's address (whose checks wait in one line) and its request's end. */
export interface CheckFrom {
  client?: string;
  signal?: AbortSignal;
}

const BCRYPT_ALPHABET = './ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789';

export class HtpasswdChecker {
  private readonly users: () => Map<string, string>;
  private readonly recent: LRUCache<string, true>;
  private readonly turns: FairTurns;
  private readonly compareWith: (password: string, hash: string) => Promise<boolean>;
  /** The stand-in hash for unknown users, made for one version of the file. */
  private standIn: { users: Map<string, string>; hash: string | undefined } | undefined;
  private worker: Worker | undefined;
  private readonly pending = new Map<number, { resolve(ok: boolean): void; reject(err: unknown): void }>();
  private ids = 0;

  /** `users` gives the current user → hash map (the file may be reloaded between calls). */
  constructor(users: () => Map<string, string>, options: HtpasswdCheckerOptions = {}) {
    this.users = users;
    this.recent = new LRUCache({ max: options.cacheEntries ?? 10_000, ttl: options.cacheMs ?? 60_000 });
    this.turns = new FairTurns({ atOnce: CHECKS_AT_ONCE, maxWaiting: options.maxWaiting ?? MAX_WAITING });
    this.compareWith = options.compare ?? ((password, hash) => this.compare(password, hash));
  }

  /**
   * Whether the password is the user's. Throws ResourceExhausted when the checks waiting fill the room
   * this client may take, or the signal's reason when it aborts while the check waits.
   */
  async check(user: string, password: string, from: CheckFrom = {}): Promise<boolean> {
    const users = this.users();
    const own = users.get(user);
    // An unknown user takes the same path and a check of the same cost, turns and bounds included.
    const hash = own ?? this.standInFor(users);
    // A file without users has no names to give away.
    if (hash === undefined) return false;
    const key = createHash('sha256').update(`${user}\0${password}\0${hash}`).digest('base64');
    if (this.recent.get(key)) return true;
    const done = await this.turns.take(clientLine(from.client), from.signal);
    try {
      const ok = (await this.compareWith(password, hash)) && own !== undefined;
      if (ok) this.recent.set(key, true);
      return ok;
    } finally {
      done();
    }
  }

  /**
   * A hash no password matches (random salt and digest), at the cost most of the file's users have: its
   * check then takes as long as a wrong password of theirs.
   */
  private standInFor(users: Map<string, string>): string | undefined {
    if (this.standIn?.users === users) return this.standIn.hash;
    const counts = new Map<string, number>();
    for (const h of users.values()) counts.set(h.slice(4, 6), (counts.get(h.slice(4, 6)) ?? 0) + 1);
    let cost: string | undefined;
    for (const [c, n] of counts) {
      const best = cost === undefined ? 0 : counts.get(cost)!;
      if (n > best || (n === best && c > cost!)) cost = c;
    }
    const body = [...randomBytes(53)].map((b) => BCRYPT_ALPHABET[b & 63]).join('');
    const hash = cost === undefined ? undefined : `$2b$${cost}$${body}`;
    this.standIn = { users, hash };
    return hash;
  }

  /** Stops the worker thread; checks under way fail. The next check starts a new one. */
  close(): void {
    const w = this.worker;
    this.worker = undefined;
    this.failAll(internal('password check worker stopped'));
    void w?.terminate();
  }

  private compare(password: string, hash: string): Promise<boolean> {
    const id = ++this.ids;
    const w = this.ensureWorker();
    w.ref();
    const job: BcryptJob = { id, password, hash };
    return new Promise<boolean>((resolve, reject) => {
      this.pending.set(id, { resolve, reject });
      w.postMessage(job);
    }).finally(() => {
      // Idle, it must not keep the process alive.
      if (this.pending.size === 0) this.worker?.unref();
    });
  }

  private ensureWorker(): Worker {
    if (this.worker) return this.worker;
    const w = new Worker(new URL('./bcrypt-worker.ts', import.meta.url));
    w.on('message', (answer: BcryptAnswer) => {
      const p = this.pending.get(answer.id);
      if (!p) return;
      this.pending.delete(answer.id);
      if ('ok' in answer) p.resolve(answer.ok);
      else p.reject(internal(`password check failed: ${answer.error}`));
    });
    const fail = (err: unknown) => {
      if (this.worker !== w) return;
      this.worker = undefined;
      this.failAll(
        internal(`password check worker failed: ${err instanceof Error ? err.message : String(err)}`),
      );
    };
    w.on('error', fail);
    w.on('exit', (code) => fail(new Error(`exited with code ${code}`)));
    this.worker = w;
    return w;
  }

  private failAll(err: unknown): void {
    for (const p of this.pending.values()) p.reject(err);
    this.pending.clear();
  }
}
