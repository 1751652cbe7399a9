// A load generator for the facade benchmarks, run as its own process so its CPU is not the server's event
// loop: `node bench/load-gen.ts '<LoadPlan JSON>'` prints one LoadResult as JSON. CONNECTIONS clients, one
// keep-alive connection each (an undici Pool), each sending the next request as soon as its answer has
// been read to the end, picked at random (seeded, so both servers get the same mix) from weighted kinds.
// Every answer is checked: its status and its body's length; anything else counts as an error.
import { Pool } from 'undici';

export interface LoadRequest {
  kind: string;
  weight: number;
  path: string;
  headers?: Record<string, string>;
  /** A random aligned range of this many bytes within `size` (Range: bytes=…, 206 expected). */
  rangeBytes?: number;
  /** Body bytes expected (whole answer), or the blob's size for a range request. */
  size: number;
}

export interface LoadPlan {
  origin: string;
  connections: number;
  durationMs: number;
  seed: number;
  requests: LoadRequest[];
}

export interface KindResult {
  count: number;
  p50: number;
  p99: number;
}

export interface LoadResult {
  requests: number;
  errors: number;
  /** The first few error messages, by message, with counts. */
  errorSamples: Record<string, number>;
  seconds: number;
  p50: number;
  p99: number;
  max: number;
  bytes: number;
  byKind: Record<string, KindResult>;
  /** CPU seconds the generator itself used. */
  cpuSeconds: number;
}

/** Percentile of sorted values (nearest rank). */
function percentile(sorted: Float64Array, p: number): number {
  if (sorted.length === 0) return Number.NaN;
  return sorted[Math.min(sorted.length - 1, Math.ceil((p / 100) * sorted.length) - 1)]!;
}

/** mulberry32: small, fast, seedable. */
function random(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

class Latencies {
  private values = new Float64Array(1 << 16);
  length = 0;
  push(v: number): void {
    if (this.length === this.values.length) {
      const bigger = new Float64Array(this.values.length * 2);
      bigger.set(this.values);
      this.values = bigger;
    }
    this.values[this.length++] = v;
  }
  sorted(): Float64Array {
    return this.values.slice(0, this.length).sort();
  }
}

export async function runLoad(plan: LoadPlan): Promise<LoadResult> {
  const pool = new Pool(plan.origin, {
    connections: plan.connections,
    pipelining: 1,
    keepAliveTimeout: 60_000,
    headersTimeout: 60_000,
    bodyTimeout: 60_000,
  });
  const rand = random(plan.seed);
  const total = plan.requests.reduce((n, r) => n + r.weight, 0);
  const pick = (): LoadRequest => {
    let x = rand() * total;
    for (const r of plan.requests) {
      x -= r.weight;
      if (x < 0) return r;
    }
    return plan.requests.at(-1)!;
  };
  const all = new Latencies();
  const byKind = new Map(plan.requests.map((r) => [r.kind, new Latencies()]));
  const errorSamples: Record<string, number> = {};
  let errors = 0;
  let bytes = 0;
  const fail = (message: string) => {
    errors++;
    if (message in errorSamples || Object.keys(errorSamples).length < 10)
      errorSamples[message] = (errorSamples[message] ?? 0) + 1;
  };

  const one = async (r: LoadRequest): Promise<void> => {
    const headers: Record<string, string> = { ...r.headers };
    let expected = r.size;
    let status = 200;
    if (r.rangeBytes !== undefined) {
      const slots = Math.max(1, Math.floor(r.size / r.rangeBytes));
      const offset = Math.floor(rand() * slots) * r.rangeBytes;
      expected = Math.min(r.rangeBytes, r.size - offset);
      headers.range = `bytes=${offset}-${offset + expected - 1}`;
      status = 206;
    }
    const start = performance.now();
    try {
      const res = await pool.request({ method: 'GET', path: r.path, headers });
      let got = 0;
      for await (const chunk of res.body) got += (chunk as Buffer).length;
      if (res.statusCode !== status) fail(`${r.kind}: HTTP ${res.statusCode}`);
      else if (got !== expected) fail(`${r.kind}: ${got} of ${expected} bytes`);
      else {
        const ms = performance.now() - start;
        all.push(ms);
        byKind.get(r.kind)!.push(ms);
        bytes += got;
      }
    } catch (err) {
      fail(`${r.kind}: ${(err as Error).message}`);
    }
  };

  const cpuBefore = process.cpuUsage();
  const started = performance.now();
  const deadline = started + plan.durationMs;
  await Promise.all(
    Array.from({ length: plan.connections }, async () => {
      while (performance.now() < deadline) await one(pick());
    }),
  );
  const seconds = (performance.now() - started) / 1000;
  const cpu = process.cpuUsage(cpuBefore);
  await pool.close();
  const sorted = all.sorted();
  const kinds: Record<string, KindResult> = {};
  for (const [kind, l] of byKind) {
    const s = l.sorted();
    kinds[kind] = { count: s.length, p50: percentile(s, 50), p99: percentile(s, 99) };
  }
  return {
    requests: sorted.length,
    errors,
    errorSamples,
    seconds,
    p50: percentile(sorted, 50),
    p99: percentile(sorted, 99),
    max: sorted.length ? sorted[sorted.length - 1]! : Number.NaN,
    bytes,
    byKind: kinds,
    cpuSeconds: (cpu.user + cpu.system) / 1e6,
  };
}

if (import.meta.main) {
  const plan = JSON.parse(process.argv[2] ?? '') as LoadPlan;
  process.stdout.write(`${JSON.stringify(await runLoad(plan))}\n`);
}
