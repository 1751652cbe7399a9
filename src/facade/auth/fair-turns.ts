// Turns at the password-check worker, shared fairly among clients. A check is slow by design (bcrypt), so
// the checks waiting are a queue that one client flooding wrong passwords could fill: with one queue in
// arrival order, everyone else waited behind the whole flood (256 checks; at cost 10 about 165 ms each on a
// test VM), and once it was full, was turned away. Here each client (an address; an IPv6 /64, which one host
// commonly holds) has its own line and the lines take turns, so a client's check waits for about one check
// of each other client waiting, whatever their number of checks. The bound on all that wait stays; when it
// is reached, the newest check of the longest line makes room, so the client that floods is turned away.
import { isIPv4, isIPv6 } from 'node:net';
import { resourceExhausted } from '../../errors.ts';

/**
 * The wait a turned-away check is told to take (Retry-After). A place frees whenever a running check ends,
 * a fraction of a second at bcrypt's costs; containers/image waits what it is told (capped at 60 s, 4 more
 * tries), containerd 1.6 tries again at once whatever it is told.
 */
export const TURNED_AWAY_RETRY_MS = 1000;

interface Waiter {
  start(): void;
  fail(err: unknown): void;
}

export class FairTurns {
  private readonly atOnce: number;
  private readonly maxWaiting: number;
  private running = 0;
  private waiting = 0;
  /** client → its waiting checks, oldest first; the map's order is the order the lines take turns in. */
  private readonly lines = new Map<string, Waiter[]>();

  constructor(options: { atOnce: number; maxWaiting: number }) {
    this.atOnce = options.atOnce;
    this.maxWaiting = options.maxWaiting;
  }

  /**
   * Resolves with the function that ends the turn, once the caller may run. Rejects with ResourceExhausted
   * when all waiting room is taken by lines no longer than the caller's, or with the signal's reason when
   * it aborts first (the check is then never run).
   */
  take(client: string, signal?: AbortSignal): Promise<() => void> {
    signal?.throwIfAborted();
    if (this.running < this.atOnce && this.waiting === 0) return Promise.resolve(this.started());
    if (this.waiting >= this.maxWaiting && !this.evictFromLongestBut(client)) {
      return Promise.reject(
        resourceExhausted('too many password checks waiting; try again', {
          retryAfterMs: TURNED_AWAY_RETRY_MS,
        }),
      );
    }
    return new Promise((resolve, reject) => {
      const onAbort = () => {
        if (this.remove(client, waiter)) reject(signal?.reason);
      };
      const waiter: Waiter = {
        start: () => {
          signal?.removeEventListener('abort', onAbort);
          resolve(this.started());
        },
        fail: (err) => {
          signal?.removeEventListener('abort', onAbort);
          reject(err);
        },
      };
      signal?.addEventListener('abort', onAbort, { once: true });
      const line = this.lines.get(client);
      if (line) line.push(waiter);
      else this.lines.set(client, [waiter]);
      this.waiting++;
    });
  }

  private started(): () => void {
    this.running++;
    let ended = false;
    return () => {
      if (ended) return;
      ended = true;
      this.running--;
      this.next();
    };
  }

  private next(): void {
    while (this.running < this.atOnce) {
      const first = this.lines.entries().next();
      if (first.done) return;
      const [client, line] = first.value;
      const waiter = line.shift()!;
      this.waiting--;
      // The line goes to the back of the rotation, or away when empty.
      this.lines.delete(client);
      if (line.length > 0) this.lines.set(client, line);
      waiter.start();
    }
  }

  /** Turns away the newest check of the longest line, if that line is longer than `client`'s. */
  private evictFromLongestBut(client: string): boolean {
    const own = this.lines.get(client)?.length ?? 0;
    let longest: [string, Waiter[]] | undefined;
    for (const entry of this.lines) if (!longest || entry[1].length > longest[1].length) longest = entry;
    if (!longest || longest[1].length <= own) return false;
    const [key, line] = longest;
    const evicted = line.pop()!;
    this.waiting--;
    if (line.length === 0) this.lines.delete(key);
    evicted.fail(
      resourceExhausted('too many password checks waiting from this client; try again', {
        retryAfterMs: TURNED_AWAY_RETRY_MS,
      }),
    );
    return true;
  }

  private remove(client: string, waiter: Waiter): boolean {
    const line = this.lines.get(client);
    const i = line?.indexOf(waiter) ?? -1;
    if (!line || i < 0) return false;
    line.splice(i, 1);
    this.waiting--;
    if (line.length === 0) this.lines.delete(client);
    return true;
  }
}

/** The line a request's checks wait in: its IPv4 address, or its IPv6 address's /64. */
export function clientLine(address: string | undefined): string {
  if (address === undefined) return '';
  const plain = address.replace(/%.*$/, '');
  const mapped = /^::ffff:(\d+\.\d+\.\d+\.\d+)$/i.exec(plain);
  if (mapped) return mapped[1]!;
  if (isIPv4(plain) || !isIPv6(plain)) return plain;
  const [head = '', tail] = plain.split('::');
  const groups = (s: string) => (s === '' ? [] : s.split(':'));
  const front = groups(head);
  const back = tail === undefined ? [] : groups(tail);
  // A dotted IPv4 tail fills two groups.
  const backGroups = back.reduce((n, g) => n + (g.includes('.') ? 2 : 1), 0);
  const all = [...front, ...Array<string>(Math.max(0, 8 - front.length - backGroups)).fill('0'), ...back];
  return `${all
    .slice(0, 4)
    .map((g) => Number.parseInt(g, 16).toString(16))
    .join(':')}::/64`;
}
