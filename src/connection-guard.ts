// Keeps idle and half-open connections from taking a server down (the facade's HTTP listener, the gRPC TCP
// listeners). Every connection counts against a total cap set below the process's open-file limit (a busy
// connection also holds files and maybe an upstream socket) and, optionally, a cap per client address. A
// connection that has not begun its first request in time is closed: Node's own header timeout only
// starts at the first byte, so a socket that says nothing would otherwise stay until the inactivity
// timeout; optionally so is one left with nothing in flight for a while. At the total cap, the oldest
// connection with no request in flight makes room for the new one, so requests keep being served however
// many idle sockets are open; only when every connection is busy is the new one refused.
import { readFileSync } from 'node:fs';
import type { Server, Socket } from 'node:net';

export interface ConnectionLimits {
  /** Open connections in all. */
  max: number;
  /** Open connections from one client address. */
  perClient: number;
  /** Time a connection has to send complete request headers (first request: from connecting). */
  headerTimeoutMs: number;
}

/** What the guard itself enforces; the facade's limits are these with a cap per client. */
export interface GuardLimits {
  max: number;
  /** Open connections from one client address (default: no such cap). */
  perClient?: number;
  /** Time a new connection has to begin its first request (HTTP: send its headers; gRPC: start a call). */
  headerTimeoutMs: number;
  /** Time a connection may stay with nothing in flight after a request before it is closed (default: any). */
  idleMs?: number;
}

export type DropReason = 'per-client' | 'full' | 'shed' | 'header-timeout' | 'idle';

export interface GuardHooks {
  onDrop?: (reason: DropReason) => void;
  /** Closes a connection the guard drops (default: destroys the socket); a protocol may say goodbye first. */
  close?: (socket: Socket, reason: DropReason) => void;
}

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
  /** Closes the connection when nothing begins before it fires: the first request, or the next one. */
  idle?: NodeJS.Timeout;
}

/** `::ffff:10.0.0.1` and `10.0.0.1` are one client. */
function clientAddress(socket: Socket): string {
  const a = socket.remoteAddress ?? '';
  return a.startsWith('::ffff:') ? a.slice(7) : a;
}

/** A connection's key: the same for a TLS socket, the TCP socket under it and HTTP/2's proxy of either. */
export function connectionKey(socket: Socket): string {
  return `${socket.remoteAddress}|${socket.remotePort}`;
}

export class ConnectionGuard {
  readonly limits: GuardLimits;
  // By connection key, oldest first.
  private readonly conns = new Map<string, Conn>();
  private readonly perAddress = new Map<string, number>();
  private readonly hooks: GuardHooks;

  /** Guards the connections `server` accepts (its 'connection' event: for TLS, before the handshake). */
  constructor(server: Server, limits: GuardLimits, hooks: GuardHooks = {}) {
    this.limits = limits;
    this.hooks = hooks;
    server.on('connection', (socket: Socket) => this.admit(socket));
  }

  /** Open connections. */
  get size(): number {
    return this.conns.size;
  }

  /** A request (an HTTP request, a gRPC call) begins on `socket`; returns what to call when it is over. */
  begin(socket: Socket): () => void {
    const c = this.conns.get(connectionKey(socket));
    if (!c) return () => {};
    clearTimeout(c.idle);
    c.idle = undefined;
    c.inFlight++;
    let ended = false;
    return () => {
      if (ended) return;
      ended = true;
      c.inFlight--;
      const idleMs = this.limits.idleMs;
      if (c.inFlight > 0 || idleMs === undefined || this.conns.get(c.key) !== c) return;
      c.idle = this.closeIfIdle(c, idleMs, 'idle');
    };
  }

  /** A timer that drops `c` if nothing is in flight on it when it fires. */
  private closeIfIdle(c: Conn, ms: number, reason: DropReason): NodeJS.Timeout {
    const timer = setTimeout(() => {
      if (c.inFlight > 0) return;
      this.forget(c);
      this.drop(c.socket, reason);
    }, ms);
    timer.unref();
    return timer;
  }

  private admit(socket: Socket): void {
    const address = clientAddress(socket);
    if ((this.perAddress.get(address) ?? 0) >= (this.limits.perClient ?? Number.POSITIVE_INFINITY)) {
      this.drop(socket, 'per-client');
      return;
    }
    if (this.conns.size >= this.limits.max && !this.shedOne()) {
      this.drop(socket, 'full');
      return;
    }
    const conn: Conn = { key: connectionKey(socket), socket, address, inFlight: 0 };
    conn.idle = this.closeIfIdle(conn, this.limits.headerTimeoutMs, 'header-timeout');
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
    clearTimeout(conn.idle);
    if (this.conns.get(conn.key) !== conn) return;
    this.conns.delete(conn.key);
    const n = (this.perAddress.get(conn.address) ?? 1) - 1;
    if (n > 0) this.perAddress.set(conn.address, n);
    else this.perAddress.delete(conn.address);
  }

  private drop(socket: Socket, reason: DropReason): void {
    this.hooks.onDrop?.(reason);
    if (this.hooks.close) this.hooks.close(socket, reason);
    else socket.destroy();
  }
}
