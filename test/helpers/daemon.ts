// A real `strata daemon` for tests: `bin/strata daemon` in its own process group on a temp root, ready once
// gRPC health answers SERVING, plus the real ctr pointed at it and a typed gRPC client.
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { join } from 'node:path';
import type { Client } from '@grpc/grpc-js';
import { Health, HealthCheckResponse_ServingStatus } from '../../src/api/gen/grpc/health/v1/health_pb.ts';
import { callUnary, createClient, metadataWith } from '../../src/api/grpc/client.ts';
import type { AfterHook } from './process.ts';
import { type ProcessResult, runProcess, type ServerProcess, spawnServer, within } from './process.ts';
import { removeTempDir, tempDir } from './tmp.ts';

const BIN = new URL('../../bin/strata', import.meta.url).pathname;
export const CTR = '/usr/bin/ctr';

export type CtrResult = ProcessResult;

/**
 * `ctr events FILTERS…` left running: `lines()` is what it printed so far (stdout, then stderr), `stop()`
 * ends it.
 */
export function ctrEvents(address: string, filters: string[]) {
  const child = spawn(CTR, ['--address', address, 'events', ...filters], {
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let out = '';
  let err = '';
  child.stdout.on('data', (b: Buffer) => {
    out += b.toString();
  });
  child.stderr.on('data', (b: Buffer) => {
    err += b.toString();
  });
  const exited = once(child, 'exit');
  return {
    lines: () => (out + err).split('\n').filter((l) => l !== ''),
    async stop() {
      if (child.exitCode === null && child.signalCode === null) child.kill('SIGTERM');
      await exited;
    },
  };
}

export interface CtrOptions {
  /** `--namespace`; ctr's default (`default`) when omitted. */
  namespace?: string;
  /** Kill ctr after this long (default 120 s). */
  timeoutMs?: number;
}

export interface StartDaemonOptions {
  /** Reuse a state directory (e.g. one a stopped daemon left); a fresh temp dir otherwise. */
  root?: string;
  logLevel?: string;
  /** Extra daemon flags, e.g. ['--metrics', '127.0.0.1:0']. */
  args?: string[];
  /** The daemon is stopped and its temp root removed after the test, pass or fail. */
  t?: AfterHook;
}

export interface TestDaemon {
  /** Path of the unix socket (what `ctr --address` takes). */
  readonly address: string;
  readonly root: string;
  /** The daemon's stdout/stderr (pino JSON lines). */
  readonly logFile: string;
  /** Stops the daemon (SIGTERM, then SIGKILL after 5 s); the root stays until the test ends. */
  stop(): Promise<void>;
  /** SIGKILLs the daemon's process group (no cleanup runs, as in a crash) and waits for it to exit. */
  kill(): Promise<void>;
  /** Stops and starts it again on the same root and socket. */
  restart(): Promise<void>;
  /** Runs the real ctr against the daemon; never throws on a non-zero exit. */
  ctr(args: string[], opts?: CtrOptions): Promise<CtrResult>;
  /** Like ctr(), but a non-zero exit throws with ctr's stderr; returns stdout. */
  ctrOk(args: string[], opts?: CtrOptions): Promise<string>;
  /** A grpc-js client on the socket (closed when the test ends if `t` was given). */
  client(): Client;
  /** Metadata for `containerd-namespace` (and more pairs). */
  metadata(namespace?: string, extra?: Record<string, string>): ReturnType<typeof metadataWith>;
}

async function healthy(address: string): Promise<boolean> {
  const client = createClient(`unix://${address}`);
  try {
    const res = await callUnary(client, Health.method.check, { service: '' }, { timeoutMs: 1000 });
    return res.status === HealthCheckResponse_ServingStatus.SERVING;
  } finally {
    client.close();
  }
}

export function runCtr(address: string, args: string[], opts: CtrOptions = {}): Promise<CtrResult> {
  const env = { ...process.env };
  // Let ctr make its Introspection.Server call as a user's ctr would.
  delete env.CONTAINERD_SUPPRESS_DEPRECATION_WARNINGS;
  delete env.CONTAINERD_ADDRESS;
  delete env.CONTAINERD_NAMESPACE;
  const full = ['--address', address, ...(opts.namespace ? ['--namespace', opts.namespace] : []), ...args];
  return runProcess(CTR, full, { env, timeoutMs: opts.timeoutMs });
}

export async function startDaemon(opts: StartDaemonOptions = {}): Promise<TestDaemon> {
  const ownRoot = opts.root === undefined;
  const root = opts.root ?? (await tempDir('daemon'));
  const address = join(root, 'strata.sock');
  const logFile = join(root, 'daemon.log');
  const clients: Client[] = [];
  let server: ServerProcess | undefined;

  const spawnDaemon = async () => {
    server = await spawnServer(
      BIN,
      [
        'daemon',
        '--root',
        root,
        '--address',
        address,
        '--log-level',
        opts.logLevel ?? 'info',
        ...(opts.args ?? []),
      ],
      { name: 'strata daemon', logFile, readyCheck: () => healthy(address), timeoutMs: 30_000 },
    );
  };
  const stop = async () => {
    await server?.stop();
  };
  const kill = async () => {
    const proc = server?.proc;
    if (proc?.pid === undefined || proc.exitCode !== null || proc.signalCode !== null) return;
    const exited = once(proc, 'exit');
    process.kill(-proc.pid, 'SIGKILL');
    await within(exited, 10_000, 'the killed daemon');
  };

  try {
    await spawnDaemon();
  } catch (err) {
    if (ownRoot) await removeTempDir(root);
    throw err;
  }
  opts.t?.after(async () => {
    for (const c of clients) c.close();
    await stop();
    if (ownRoot) await removeTempDir(root);
  });

  const ctr = (args: string[], o?: CtrOptions) => runCtr(address, args, o);
  return {
    address,
    root,
    logFile,
    stop,
    kill,
    async restart() {
      await stop();
      await spawnDaemon();
    },
    ctr,
    async ctrOk(args, o) {
      const r = await ctr(args, o);
      if (r.code !== 0) throw new Error(`ctr ${args.join(' ')}: exit ${r.code}\n${r.stderr}`);
      return r.stdout;
    },
    client() {
      const c = createClient(`unix://${address}`);
      clients.push(c);
      return c;
    },
    metadata(namespace = 'default', extra = {}) {
      return metadataWith({ 'containerd-namespace': namespace, ...extra });
    },
  };
}

/**
 * A tabwriter table as ctr prints it: columns start where the header's names start (values such as
 * "2.1 MiB" contain spaces, so splitting on whitespace would not do).
 */
export function parseTable(out: string): Array<Record<string, string>> {
  const lines = out.split('\n').filter((l) => l.trim() !== '');
  const header = lines[0] ?? '';
  const names = header.trim().split(/\s+/);
  const starts = names.map((name, i) => {
    const from = i === 0 ? 0 : header.indexOf(` ${name}`) + 1;
    return header.indexOf(name, from);
  });
  return lines.slice(1).map((line) => {
    const row: Record<string, string> = {};
    names.forEach((name, i) => {
      row[name] = line.slice(starts[i], i + 1 < names.length ? starts[i + 1] : undefined).trim();
    });
    return row;
  });
}
