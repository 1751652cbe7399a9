// `strata facade` as the integration tests run it: a child process on a config file, ready once /readyz
// answers 200, its output in a log file.
import assert from 'node:assert/strict';
import { type ServerProcess, spawnServer } from './process.ts';

const STRATA = new URL('../../bin/strata', import.meta.url).pathname;

export interface FacadeSpawnOptions {
  /** The config file. */
  config: string;
  /** The facade's base URL (its `listen` address). */
  url: string;
  logFile: string;
  /** --log-level, when not the default. */
  logLevel?: string;
  /** The `strata` to run (default: this checkout's bin/strata). */
  strata?: string;
  /** How long to wait for readiness (spawnServer's default when not given). */
  timeoutMs?: number;
  /** Variables set (or, undefined, unset) over this process's environment. */
  env?: NodeJS.ProcessEnv;
}

export function spawnFacade(o: FacadeSpawnOptions): Promise<ServerProcess> {
  const args = ['facade', '--config', o.config, ...(o.logLevel ? ['--log-level', o.logLevel] : [])];
  return spawnServer(o.strata ?? STRATA, args, {
    name: 'strata facade',
    logFile: o.logFile,
    readyCheck: async () => (await fetch(`${o.url}/readyz`)).status === 200,
    ...(o.timeoutMs !== undefined ? { timeoutMs: o.timeoutMs } : {}),
    ...(o.env && { env: o.env }),
  });
}

/**
 * GETs a blob whose bytes are wrong, which must never arrive whole: the answer is either 502 (the failure
 * was known before any byte went out) or a 200 broken off before the end. Returns the status.
 */
export async function getWrongBlob(url: string, size: number): Promise<number> {
  const res = await fetch(url);
  if (res.status !== 200) {
    assert.equal(res.status, 502, `status ${res.status}`);
    assert.equal(((await res.json()) as { errors: { code: string }[] }).errors[0]?.code, 'UNAVAILABLE');
    return res.status;
  }
  let received = 0;
  await assert.rejects(async () => {
    for await (const chunk of res.body as unknown as AsyncIterable<Uint8Array>) received += chunk.length;
  });
  assert.ok(received < size, `got ${received} of ${size} bytes`);
  return res.status;
}
