// `strata up` as a child process for tests: started on a root and config, ready once the addresses it
// printed answer /readyz; every address read from its summary lines.
import assert from 'node:assert/strict';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { runCtr } from './daemon.ts';
import { runProcess, type ServerProcess, spawnServer } from './process.ts';

export const STRATA = new URL('../../bin/strata', import.meta.url).pathname;

export interface UpAddresses {
  socket: string;
  registryHost: string;
  registryUrl: string;
  specProvider: string;
  builder: string;
  opsUrl: string;
}

/** The addresses `strata up` printed in its log (this start's, the last summary in the file). */
export function parseUpSummary(log: string): UpAddresses | undefined {
  const last = log.lastIndexOf('strata up: running');
  if (last < 0) return undefined;
  const text = log.slice(last);
  const find = (re: RegExp) => re.exec(text)?.[1];
  const socket = find(/^ {2}daemon +unix:\/\/(\S+)/m);
  const registryUrl = find(/^ {2}registry +(http:\/\/\S+)/m);
  const specProvider = find(/^ {2}spec provider +(\S+)/m);
  const builder = find(/^ {2}builder +(\S+)/m);
  const metrics = find(/^ {2}metrics +(http:\/\/\S+)\/metrics/m);
  if (!socket || !registryUrl || !specProvider || !builder || !metrics) return undefined;
  return {
    socket,
    registryUrl,
    registryHost: new URL(registryUrl).host,
    specProvider,
    builder,
    opsUrl: metrics,
  };
}

/** Starts `strata up --root root --config config`, logging to `<work>/up-<n>.log`; resolves once ready. */
export async function startStrataUp(o: {
  work: string;
  root: string;
  config: string;
  /** Tells this start's log file apart from earlier ones. */
  n: number;
}): Promise<{ server: ServerProcess; at: UpAddresses }> {
  const logFile = join(o.work, `up-${o.n}.log`);
  let at: UpAddresses | undefined;
  const server = await spawnServer(STRATA, ['up', '--root', o.root, '--config', o.config], {
    name: 'strata up',
    logFile,
    timeoutMs: 60_000,
    readyCheck: async () => {
      const found = parseUpSummary(await readFile(logFile, 'utf8'));
      if (!found) return false;
      at = found;
      return (await fetch(`${found.opsUrl}/readyz`)).status === 200;
    },
  });
  return { server, at: at! };
}

/** Sum of the metric's samples whose labels include every one of `labels`. */
export function metricSample(metrics: string, name: string, labels: string[]): number {
  let sum = 0;
  for (const line of metrics.split('\n')) {
    const bare = line.startsWith(`${name} `);
    if (!(bare || line.startsWith(`${name}{`)) || !labels.every((l) => line.includes(l))) continue;
    sum += Number(line.slice(line.lastIndexOf(' ') + 1));
  }
  return sum;
}

/** Runs `strata args`, which must succeed; its stdout. */
export async function strata(args: string[]): Promise<string> {
  const r = await runProcess(STRATA, args, { timeoutMs: 300_000 });
  assert.equal(r.code, 0, `strata ${args.join(' ')}: ${r.stderr}`);
  return r.stdout;
}

/** Runs ctr against the daemon at `socket`, which must succeed; its stdout. */
export async function ctrOk(socket: string, args: string[]): Promise<string> {
  const r = await runCtr(socket, args, { timeoutMs: 180_000 });
  assert.equal(r.code, 0, `ctr ${args.join(' ')}: ${r.stderr}`);
  return r.stdout;
}
