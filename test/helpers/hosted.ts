// A facade serving hosted repositories on a daemon root in a temp dir, in this process, for tests that push
// to and pull from it; plus a small raw HTTP client that reports status, headers and the OCI error code.
import { join } from 'node:path';
import { pino } from 'pino';
import { Registry } from 'prom-client';
import { type FacadeApp, startFacade } from '../../src/server/facade.ts';
import { facadeConfigFrom } from '../../src/server/facade-config.ts';

export interface HostedServer {
  app: FacadeApp;
  /** `127.0.0.1:PORT`, for image references. */
  host: string;
  url: string;
}

/** Starts a facade with `hosted: { root }` on a free port (or `port`, to come back on the same one). */
export async function startHosted(root: string, port = 0): Promise<HostedServer> {
  const app = await startFacade(
    facadeConfigFrom(
      { listen: `127.0.0.1:${port}`, hosted: { root }, cache: { dir: join(root, 'facade-cache') } },
      root,
    ),
    { logger: pino({ level: 'silent' }), registry: new Registry() },
  );
  return { app, host: new URL(app.url).host, url: app.url };
}

export interface RawAnswer {
  status: number;
  headers: Headers;
  /** The first OCI error code of an error body, if any. */
  code?: string;
  body: Buffer;
}

/** One request, no redirects followed, with a 30 s timeout. */
export async function raw(
  base: string,
  method: string,
  path: string,
  opts: { headers?: Record<string, string>; body?: Uint8Array | string } = {},
): Promise<RawAnswer> {
  const res = await fetch(new URL(path, base), {
    method,
    headers: opts.headers,
    body: typeof opts.body === 'string' || opts.body === undefined ? opts.body : new Uint8Array(opts.body),
    redirect: 'manual',
    signal: AbortSignal.timeout(30_000),
  });
  const body = Buffer.from(await res.arrayBuffer());
  let code: string | undefined;
  if (res.status >= 400 && body.length > 0) {
    try {
      code = (JSON.parse(body.toString('utf8')) as { errors?: { code?: string }[] }).errors?.[0]?.code;
    } catch {
      code = undefined;
    }
  }
  return { status: res.status, headers: res.headers, code, body };
}

/** Upload locations kept by a scripted request sequence, by the name a step gave them. */
export type StepState = Map<string, string>;

/**
 * One request of a sequence sent to docker-registry and to Strata alike. Where the two differ on purpose,
 * `registry` and `strata` hold each one's answer (checked, so a departure stays known).
 */
export interface RawStep {
  name: string;
  method: string;
  /** The path, given what earlier steps returned (upload locations). */
  path: (s: StepState) => string;
  headers?: Record<string, string>;
  body?: Uint8Array | string;
  /** Remembers the answer's Location under this key (docker-registry's changes with every chunk). */
  keep?: string;
  registry?: string;
  strata?: string;
}

/** The location a step kept under `key`. */
export function kept(s: StepState, key: string): string {
  const v = s.get(key);
  if (v === undefined) throw new Error(`no location kept as ${key}`);
  return v;
}

/** A location with room for one more query parameter. */
export function withQuery(location: string): string {
  return location.includes('?') ? `${location}&` : `${location}?`;
}
