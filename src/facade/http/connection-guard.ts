// Keeps idle and half-open connections from taking the facade down. Every connection counts against a
// total cap set below the process's open-file limit (a busy connection also holds a blob file and maybe an
// upstream socket) and a cap per client address. A connection that has not sent the headers of its first
// request in time is closed: Node's own header timeout only starts at the first byte, so a socket that
// says nothing would otherwise stay until the inactivity timeout. At the total cap, the oldest connection
// with no request in flight makes room for the new one, so requests keep being served however many idle
// sockets are open; only when every connection is busy is the new one refused.
import { readFileSync } from 'node:fs';
import type { Server } from 'node:http';
import type { Socket } from 'node:net';

export interface ConnectionLimits {
  /** Open connections in all. */
  max: number;
  /** Open connections from one client address. */
  perClient: number;
  /** Time a connection has to send complete request headers (first request: from connecting). */
  headerTimeoutMs: number;
}

export type DropReason = 'per-client' | 'full' | 'shed' | 'header-timeout';

export const DEFAULT_HEADER_TIMEOUT_MS = 10_000;
// Descriptors kept for everything else: cache files, upstream sockets, the spec providers, logs.
const RESERVED_FILES = 256;
const MAX_DEFAULT_CONNECTIONS = 16_384;

/** The soft open-file limit (RLIMIT_NOFILE) of this process, if the system says. */
export function openFileLimit(limitsFile = '/proc/self/limits'): number | undefined {
  try {
    const line = readFileSync(limitsFile, 'utf8')
      .split('\n')
      .find((l) => l.startsWith('Max open files'));
    const soft = line?.slice('Max open files'.length).trim().split(/\s+/)[0];
    if (soft === 'unlimited') return Number.POSITIVE_INFINITY;
    const n = Number(soft);
    return Number.isSafeInteger(n) && n > 0 ? n : undefined;
  } catch {
    return undefined;
  }
}

/**
 * The limits given, the rest fitted to the open-file limit: half of what is left after a reserve (a
 * connection serving a blob holds two descriptors or more) in all, an eighth of that per client address.
 */
export function connectionLimits(
  given: Partial<ConnectionLimits>,
  nofile = openFileLimit() ?? 1024,
): ConnectionLimits {
  const max =
    given.max ?? Math.max(32, Math.min(MAX_DEFAULT_CONNECTIONS, Math.floor((nofile - RESERVED_FILES) / 2)));
  return {
    max,
    perClient: given.perClient ?? Math.max(1, Math.floor(max / 8)),
    headerTimeoutMs: given.headerTimeoutMs ?? DEFAULT_HEADER_TIMEOUT_MS,
  };
}

interface Conn {
  key: string;
  socket: Socket;
  address: string;
  inFlight: number;
  firstHeaders?: NodeJS.Timeout;
}

/** `::ffff:10.0.0.1` and `10.0.0.1` are one client. */
function clientAddress(socket: Socket): string {
  const a = socket.remoteAddress ?? '';
  return a.startsWith('::ffff:') ? a.slice(7) : a;
}

function keyOf(socket: Socket): string {
  return `${socket.remoteAddress}|${socket.remotePort}`;
}

export class ConnectionGuard {
  readonly limits: ConnectionLimits;
  // By remote address and port (the same for a TLS socket and the TCP socket under it), oldest first.
  private readonly conns = new Map<string, Conn>();
  private readonly perAddress = new Map<string, number>();
  private readonly onDrop: (reason: DropReason) => void;

  constructor(server: Server, limits: ConnectionLimits, onDrop: (reason: DropReason) => void = () => {}) {
    this.limits = limits;
    this.onDrop = onDrop;
    server.headersTimeout = limits.headerTimeoutMs;
    server.on('connection', (socket: Socket) => this.admit(socket));
    server.on('request', (req, res) => {
      const c = this.conns.get(keyOf(req.socket));
      if (!c) return;
      clearTimeout(c.firstHeaders);
      c.inFlight++;
      res.once('close', () => c.inFlight--);
    });
  }

  /** Open connections. */
  get size(): number {
    return this.conns.size;
  }

  private admit(socket: Socket): void {
    const address = clientAddress(socket);
    if ((this.perAddress.get(address) ?? 0) >= this.limits.perClient) {
      this.drop(socket, 'per-client');
      return;
    }
    if (this.conns.size >= this.limits.max && !this.shedOne()) {
      this.drop(socket, 'full');
      return;
    }
    const conn: Conn = { key: keyOf(socket), socket, address, inFlight: 0 };
    conn.firstHeaders = setTimeout(() => {
      if (conn.inFlight === 0) this.drop(socket, 'header-timeout');
    }, this.limits.headerTimeoutMs);
    conn.firstHeaders.unref();
    this.conns.set(conn.key, conn);
    this.perAddress.set(address, (this.perAddress.get(address) ?? 0) + 1);
    socket.once('close', () => this.forget(conn));
  }

  /** Closes the oldest connection with no request in flight; false when every one is busy. */
  private shedOne(): boolean {
    for (const c of this.conns.values()) {
      if (c.inFlight === 0) {
        // Out of the count now: its 'close' comes later, and the new connection takes its place.
        this.forget(c);
        this.drop(c.socket, 'shed');
        return true;
      }
    }
    return false;
  }

  private forget(conn: Conn): void {
    clearTimeout(conn.firstHeaders);
    if (this.conns.get(conn.key) !== conn) return;
    this.conns.delete(conn.key);
    const n = (this.perAddress.get(conn.address) ?? 1) - 1;
    if (n > 0) this.perAddress.set(conn.address, n);
    else this.perAddress.delete(conn.address);
  }

  private drop(socket: Socket, reason: DropReason): void {
    this.onDrop(reason);
    socket.destroy();
  }
}
