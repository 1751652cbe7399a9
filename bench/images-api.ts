// The Images API side by side: one Node gRPC client drives Create, Get, List (with a label filter), Update
// and Delete of N images against `strata daemon` and against a real containerd 1.6 (started here on a temp
// root, CRI off, its own socket), same run, same concurrency. Operations are measured one after another,
// each on both sides back to back; the read-only ones (Get, List) in ROUNDS rounds that alternate who goes
// first, since this machine's speed drifts from one second to the next. Prints ops/s (the median of
// the rounds) and the ratio Strata/containerd per operation (target ≥ 1.0).
//
//   node bench/images-api.ts        (N=10000 CONCURRENCY=16 LISTS=200 WARMUP=2000 ROUNDS=5 to change it)
import { createHash } from 'node:crypto';
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import type { Client, Metadata } from '@grpc/grpc-js';
import { Images } from '../src/api/gen/containerd/services/images/v1/images_pb.ts';
import { Version } from '../src/api/gen/containerd/services/version/v1/version_pb.ts';
import { callUnary, createClient, metadataWith } from '../src/api/grpc/client.ts';
import { spawnServer } from '../test/helpers/process.ts';
import { Cleanup, tempDir } from '../test/helpers/tmp.ts';
import { intArg, median, printTable } from './stats.ts';

const N = intArg('N', 10_000);
const CONCURRENCY = intArg('CONCURRENCY', 16);
const LISTS = intArg('LISTS', 200);
const ROUNDS = intArg('ROUNDS', 5);
/** List filters select one of this many label groups, so each List returns about N/GROUPS images. */
const GROUPS = 100;
const NAMESPACE = 'bench';
const STRATA_BIN = new URL('../bin/strata', import.meta.url).pathname;

interface Target {
  name: string;
  client: Client;
}

const md = metadataWith({ 'containerd-namespace': NAMESPACE });
/** Calls of each operation made in another namespace before measuring, so neither side is measured cold. */
const WARMUP = intArg('WARMUP', 2000);
const warmMd = metadataWith({ 'containerd-namespace': 'warmup' });
const nameOf = (i: number) => `registry.example/bench/app-${i}:v1`;
const digestOf = (i: number) => `sha256:${createHash('sha256').update(`bench-${i}`).digest('hex')}`;

async function answers(address: string): Promise<boolean> {
  const c = createClient(`unix://${address}`);
  try {
    await callUnary(c, Version.method.version, {}, { timeoutMs: 1000 });
    return true;
  } finally {
    c.close();
  }
}

/** Runs op(0..n-1) with `CONCURRENCY` calls in flight; returns operations per second. */
async function rate(n: number, op: (i: number) => Promise<unknown>): Promise<number> {
  let next = 0;
  const start = process.hrtime.bigint();
  await Promise.all(
    Array.from({ length: CONCURRENCY }, async () => {
      while (next < n) await op(next++);
    }),
  );
  const seconds = Number(process.hrtime.bigint() - start) / 1e9;
  return n / seconds;
}

type Op = (c: Client, i: number, md: Metadata) => Promise<unknown>;
/** `repeatable`: leaves the store as it found it, so it can be measured in several rounds. */
const operations: Array<{ name: string; count: number; run: Op; repeatable?: boolean }> = [
  {
    name: 'Create',
    count: N,
    run: (c, i, md) =>
      callUnary(
        c,
        Images.method.create,
        {
          image: {
            name: nameOf(i),
            labels: { 'bench.group': String(i % GROUPS), 'bench.index': String(i) },
            target: {
              mediaType: 'application/vnd.oci.image.manifest.v1+json',
              digest: digestOf(i),
              size: BigInt(1000 + i),
            },
          },
        },
        { metadata: md },
      ),
  },
  {
    name: 'Get',
    count: N,
    repeatable: true,
    run: (c, i, md) => callUnary(c, Images.method.get, { name: nameOf(i) }, { metadata: md }),
  },
  {
    name: `List (label filter, ~${Math.round(N / GROUPS)} hits)`,
    count: LISTS,
    repeatable: true,
    run: async (c, i, md) => {
      const res = await callUnary(
        c,
        Images.method.list,
        { filters: [`labels."bench.group"==${i % GROUPS}`] },
        { metadata: md, timeoutMs: 120_000 },
      );
      if (res.images.length === 0) throw new Error('list returned nothing');
    },
  },
  {
    name: 'Update (labels.<key> mask)',
    count: N,
    run: (c, i, md) =>
      callUnary(
        c,
        Images.method.update,
        {
          image: { name: nameOf(i), labels: { 'bench.updated': 'yes' } },
          updateMask: { paths: ['labels.bench.updated'] },
        },
        { metadata: md },
      ),
  },
  {
    name: 'Delete',
    count: N,
    run: (c, i, md) => callUnary(c, Images.method.delete, { name: nameOf(i) }, { metadata: md }),
  },
];

const cleanup = new Cleanup();
try {
  const dir = await tempDir('bench-images');
  cleanup.addDir(dir);

  const strataSock = join(dir, 'strata.sock');
  const strata = await spawnServer(
    STRATA_BIN,
    ['daemon', '--root', join(dir, 'strata'), '--address', strataSock, '--log-level', 'warn'],
    { name: 'strata daemon', logFile: join(dir, 'strata.log'), readyCheck: () => answers(strataSock) },
  );
  cleanup.add(() => strata.stop());

  const ctrdSock = join(dir, 'containerd.sock');
  const config = join(dir, 'containerd.toml');
  await writeFile(
    config,
    [
      'version = 2',
      `root = "${join(dir, 'containerd-root')}"`,
      `state = "${join(dir, 'containerd-state')}"`,
      'disabled_plugins = ["io.containerd.grpc.v1.cri"]',
      '[grpc]',
      `  address = "${ctrdSock}"`,
      '[ttrpc]',
      `  address = "${ctrdSock}.ttrpc"`,
      '[debug]',
      `  address = "${join(dir, 'containerd-debug.sock')}"`,
      '  level = "warn"',
      '',
    ].join('\n'),
  );
  const containerd = await spawnServer('containerd', ['--config', config], {
    name: 'containerd',
    logFile: join(dir, 'containerd.log'),
    readyCheck: () => answers(ctrdSock),
  });
  cleanup.add(() => containerd.stop());

  const targets: Target[] = [
    { name: 'strata', client: createClient(`unix://${strataSock}`) },
    { name: 'containerd', client: createClient(`unix://${ctrdSock}`) },
  ];
  for (const t of targets) cleanup.add(() => t.client.close());

  console.log(
    `Images API: N=${N}, ${CONCURRENCY} calls in flight, ${LISTS} lists, after ${WARMUP} warm-up calls of each, ${ROUNDS} rounds of Get and List; one grpc-js client each`,
  );
  for (const t of targets) {
    // Every operation, in another namespace, so neither side (nor the client's decoding of its answers)
    // is measured while still compiling its code paths.
    for (const op of operations) {
      await rate(Math.min(op.count, WARMUP), (i) => op.run(t.client, i, warmMd));
    }
  }
  const results: number[][] = targets.map(() => []);
  for (const op of operations) {
    const samples: number[][] = targets.map(() => []);
    for (let round = 0; round < (op.repeatable ? ROUNDS : 1); round++) {
      const order = round % 2 === 0 ? [0, 1] : [1, 0];
      for (const k of order) samples[k]!.push(await rate(op.count, (i) => op.run(targets[k]!.client, i, md)));
    }
    for (const [k, v] of samples.entries()) results[k]!.push(median(v));
    console.log(
      `${op.name}: ${targets.map((t, k) => `${t.name} ${samples[k]!.map((v) => v.toFixed(0)).join(' ')}`).join('; ')}`,
    );
  }
  const [s, c] = results as [number[], number[]];
  const rows = [['operation', 'strata ops/s', 'containerd ops/s', 'strata/containerd']];
  operations.forEach((op, i) => {
    rows.push([op.name, s[i]!.toFixed(0), c[i]!.toFixed(0), `${(s[i]! / c[i]!).toFixed(2)}×`]);
  });
  printTable(rows);
} finally {
  await cleanup.run();
}
