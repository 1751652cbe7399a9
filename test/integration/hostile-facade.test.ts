// Hostile-input corpus for the facade: hosts, clients and files that try to stall it. Each attack runs at
// a size that takes seconds and shows the facade answering other clients while it goes on. The base image
// comes from a real docker-registry; the hostile parties are small loopback servers and sockets made here.
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { writeFile } from 'node:fs/promises';
import {
  type AddressInfo,
  connect,
  createServer as createTcpServer,
  type Socket,
  type Server as TcpServer,
} from 'node:net';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { pino } from 'pino';
import { Registry } from 'prom-client';
import { type FacadeApp, startFacade } from '../../src/server/facade.ts';
import { facadeConfigFrom } from '../../src/server/facade-config.ts';
import { type PushedImage, pushBusybox } from '../helpers/images.ts';
import { freePort } from '../helpers/ports.ts';
import { spawnServer, waitFor } from '../helpers/process.ts';
import { startRegistry, type TestRegistry } from '../helpers/registry.ts';
import { removeTempDir, tempDir } from '../helpers/tmp.ts';

const logger = pino({ level: 'silent' });
const NODE = process.execPath;
const MAIN = new URL('../../src/cli/main.ts', import.meta.url).pathname;

function sha256(b: Uint8Array): string {
  return `sha256:${createHash('sha256').update(b).digest('hex')}`;
}

async function metric(app: FacadeApp, line: string): Promise<number> {
  const text = (await get(`${app.url}/metrics`)).body.toString();
  const found = text.split('\n').find((l) => l.startsWith(`${line} `));
  return found ? Number(found.split(' ').pop()) : 0;
}

/**
 * Opens `count` connections from the loopback address `from` that send part of a request's headers and
 * then a byte now and then, never finishing them (slowloris), or (`silent`) send nothing at all. Resolves
 * once each is connected or refused.
 */
async function slowloris(
  port: number,
  from: string,
  count: number,
  options: { silent?: boolean } = {},
): Promise<Socket[]> {
  const sockets = await Promise.all(
    Array.from(
      { length: count },
      () =>
        new Promise<Socket>((resolve) => {
          const s = connect({ host: '127.0.0.1', port, localAddress: from });
          s.on('error', () => {});
          s.once('connect', () => {
            if (!options.silent) s.write('GET /v2/ HTTP/1.1\r\nHost: facade\r\n');
            resolve(s);
          });
          s.once('close', () => resolve(s));
        }),
    ),
  );
  if (options.silent) return sockets;
  const drip = setInterval(() => {
    for (const s of sockets) if (!s.destroyed) s.write('x');
  }, 200);
  for (const s of sockets) s.once('close', () => sockets.every((x) => x.destroyed) && clearInterval(drip));
  drip.unref();
  return sockets;
}

/** Waits (polling) until at most `n` of the sockets are still open; refusals take a moment to arrive. */
async function untilAtMostOpen(sockets: Socket[], n: number): Promise<number> {
  const open = () => sockets.filter((s) => !s.destroyed).length;
  await waitFor(() => open() <= n, 10_000, { what: `at most ${n} sockets open` });
  return open();
}

/** Health, readiness, a manifest and its first layer's blob, each answered in full. */
async function servedMeanwhile(url: string, name: string): Promise<void> {
  assert.equal((await get(`${url}/healthz`)).status, 200);
  assert.equal((await get(`${url}/readyz`)).status, 200);
  const m = await get(`${url}/v2/${name}/manifests/latest`, {
    headers: { accept: 'application/vnd.oci.image.manifest.v1+json' },
  });
  assert.equal(m.status, 200);
  const layer = (JSON.parse(m.body.toString()) as { layers: { digest: string }[] }).layers[0]!;
  const blob = await get(`${url}/v2/${name}/blobs/${layer.digest}`);
  assert.equal(blob.status, 200);
  assert.equal(sha256(blob.body), layer.digest);
}

async function get(url: string, init: RequestInit = {}): Promise<{ status: number; body: Buffer }> {
  const res = await fetch(url, init);
  return { status: res.status, body: Buffer.from(await res.arrayBuffer()) };
}

function remoteLayer(url: string, bytes: Buffer) {
  return {
    remote: {
      url,
      digest: sha256(bytes),
      diffId: '',
      mediaType: 'application/vnd.oci.image.layer.v1.tar',
      size: String(bytes.length),
    },
  };
}

/**
 * A content-layer host on loopback: accepts every connection; while `silent` it never says a word,
 * otherwise it answers any request with `bytes`.
 */
class ContentHost {
  silent = true;
  connections = 0;
  readonly bytes: Buffer;
  private readonly server: TcpServer;
  private readonly sockets = new Set<Socket>();
  constructor(bytes: Buffer) {
    this.bytes = bytes;
    this.server = createTcpServer((socket) => {
      this.connections++;
      this.sockets.add(socket);
      socket.on('close', () => this.sockets.delete(socket));
      socket.on('error', () => {});
      let head = '';
      socket.on('data', (d) => {
        head += d.toString('latin1');
        if (this.silent || !head.includes('\r\n\r\n')) return;
        head = '';
        socket.write(`HTTP/1.1 200 OK\r\ncontent-length: ${this.bytes.length}\r\n\r\n`);
        socket.write(this.bytes);
      });
    });
  }
  async listen(): Promise<string> {
    await new Promise<void>((r) => this.server.listen(0, '127.0.0.1', r));
    return `127.0.0.1:${(this.server.address() as AddressInfo).port}`;
  }
  async close(): Promise<void> {
    for (const s of this.sockets) s.destroy();
    await new Promise<void>((r) => this.server.close(() => r()));
  }
}

describe('hostile facade inputs', () => {
  let reg: TestRegistry;
  let busybox: PushedImage;
  let work: string;

  before(async () => {
    reg = await startRegistry();
    busybox = await pushBusybox(reg, 'base/busybox');
    work = await tempDir('hostile-facade');
  });

  after(async () => {
    if (work) await removeTempDir(work);
    await reg?.stop();
  });

  async function facade(
    name: string,
    fixed: Record<string, unknown>,
    extra: Record<string, unknown> = {},
  ): Promise<FacadeApp> {
    const dir = join(work, name);
    const fixedFile = join(work, `${name}.json`);
    await writeFile(fixedFile, JSON.stringify(fixed));
    const config = facadeConfigFrom(
      {
        listen: '127.0.0.1:0',
        specProviders: { fixedFile },
        cache: { dir: join(dir, 'cache'), maxBytes: '1GiB' },
        ...extra,
      },
      dir,
    );
    return startFacade(config, { logger, registry: new Registry() });
  }

  // Without the bound both requests waited 5 attempts x 30 s for headers (the test's timeout cuts that).
  test('a content-layer host that accepts and never answers fails blob requests within the stall bound', {
    timeout: 60_000,
  }, async (t) => {
    const host = new ContentHost(Buffer.alloc(64 * 1024, 5));
    const hostPort = await host.listen();
    t.after(() => host.close());
    const app = await facade(
      'silent-host',
      {
        silent: {
          baseRef: busybox.ref,
          contentLayer: [remoteLayer(`http://${hostPort}/layer.tar`, host.bytes)],
        },
      },
      { plainHttpHosts: [hostPort], upstreamStallTimeoutSeconds: 1 },
    );
    t.after(() => app.close());
    const digest = sha256(host.bytes);
    const blobUrl = `${app.url}/v2/fixed/silent/blobs/${digest}`;

    const first = get(blobUrl);
    await new Promise((r) => setTimeout(r, 300));
    // Joins the fill in progress: must fail with it, not wait a bound of its own.
    const joined = get(blobUrl);
    // Meanwhile the facade answers everyone else.
    assert.equal((await get(`${app.url}/healthz`)).status, 200);
    assert.equal((await get(`${app.url}/v2/fixed/silent/manifests/latest`)).status, 200);

    for (const res of await Promise.all([first, joined])) {
      assert.equal(res.status, 504);
      const err = JSON.parse(res.body.toString()).errors[0];
      assert.equal(err.code, 'UNAVAILABLE');
      assert.match(err.message, /sent nothing for 1 s \(0 of 65536 bytes received\)/);
    }
    assert.equal(app.cache.has(digest as never), false);

    // The host recovers; the next request asks it afresh instead of repeating the cached failure.
    host.silent = false;
    const before = host.connections;
    const ok = await get(blobUrl);
    assert.equal(ok.status, 200);
    assert.deepEqual(ok.body, host.bytes);
    assert.ok(host.connections > before);
    assert.equal(app.cache.has(digest as never), true);
  });

  test('a fixed-spec file rewritten in place never empties the served set', async (t) => {
    const app = await facade('rewrite', { a: { baseRef: busybox.ref }, b: { baseRef: busybox.ref } });
    t.after(() => app.close());
    const fixedFile = join(work, 'rewrite.json');
    const status = async (name: string) => (await get(`${app.url}/v2/fixed/${name}/manifests/latest`)).status;
    const refused = () => metric(app, 'strata_facade_fixed_spec_loads_total{result="refused"}');
    assert.equal(await status('a'), 200);

    // Clients keep pulling while the file goes through what `cat new > file` and a failed edit leave.
    const seen = new Map<number, number>();
    let polling = true;
    const poller = (async () => {
      while (polling) {
        for (const name of ['a', 'b']) {
          const s = await status(name);
          seen.set(s, (seen.get(s) ?? 0) + 1);
        }
      }
    })();
    try {
      await writeFile(fixedFile, '');
      await waitFor(async () => (await refused()) >= 1, 10_000, { what: 'the empty file refused' });
      await writeFile(fixedFile, '{"a": {"baseRef": "');
      await waitFor(async () => (await refused()) >= 2, 10_000, { what: 'the partial file refused' });
    } finally {
      polling = false;
      await poller;
    }
    assert.deepEqual([...seen.keys()], [200], `statuses seen: ${JSON.stringify([...seen])}`);
    assert.ok((seen.get(200) ?? 0) >= 4);

    // The next good write is picked up.
    await writeFile(fixedFile, JSON.stringify({ a: { baseRef: busybox.ref }, c: { baseRef: busybox.ref } }));
    await waitFor(async () => (await status('c')) === 200, 10_000, { what: 'the new spec served' });
    // (A composition is reused for a second, so the dropped name goes once that has passed.)
    await waitFor(async () => (await status('b')) === 404, 10_000, { what: 'the dropped spec gone' });
  });

  test('idle and half-open connections cannot crowd out health checks and pulls', {
    timeout: 120_000,
  }, async (t) => {
    const app = await facade(
      'slowloris',
      { ws: { baseRef: busybox.ref } },
      { connections: { max: 40, perClient: 10, headerTimeoutSeconds: 2 } },
    );
    const attackers: Socket[] = [];
    t.after(async () => {
      for (const s of attackers) s.destroy();
      await app.close();
    });
    const port = Number(new URL(app.url).port);
    const served = () => servedMeanwhile(app.url, 'fixed/ws');
    // 200 from one address: it keeps 10, the rest are closed at once, and everyone else is served.
    const one = await slowloris(port, '127.0.0.2', 200);
    attackers.push(...one);
    // (The server keeps the first 10 it accepted; some may be closed by the time all are accepted.)
    assert.ok((await untilAtMostOpen(one, 10)) > 0);
    await served();

    // 10 addresses x 10 fill the facade past its cap of 40: idle ones make room for real requests.
    for (let i = 3; i < 13; i++) attackers.push(...(await slowloris(port, `127.0.0.${i}`, 10)));
    await untilAtMostOpen(attackers, 40);
    await served();

    // Headers never finished: every attacker is closed after the header timeout, dripping or not.
    await Promise.all(
      attackers.map((s) => (s.destroyed ? undefined : new Promise((r) => s.once('close', r)))),
    );
    const dropped = (reason: string) =>
      metric(app, `strata_facade_connections_dropped_total{reason="${reason}"}`);
    assert.ok((await dropped('per-client')) >= 190);
    assert.ok((await dropped('shed')) > 0);
    assert.ok((await dropped('header-timeout')) > 0);
    await served();
  });

  test('more idle connections than the open-file limit: the default caps keep the facade serving', {
    timeout: 120_000,
  }, async (t) => {
    const dir = join(work, 'nofile');
    const fixedFile = join(work, 'nofile.json');
    await writeFile(fixedFile, JSON.stringify({ ws: { baseRef: busybox.ref } }));
    const port = await freePort();
    // 1024 descriptors: the caps come from the limit (384 in all, 48 per address).
    const facadeProc = await spawnServer(
      'prlimit',
      [
        '--nofile=1024:1024',
        NODE,
        MAIN,
        'facade',
        '--listen',
        `127.0.0.1:${port}`,
        '--fixed-specs',
        fixedFile,
      ],
      {
        env: { XDG_CACHE_HOME: join(dir, 'cache') },
        readyCheck: async () =>
          (await fetch(`http://127.0.0.1:${port}/readyz`).catch(() => undefined))?.status === 200,
        logFile: join(work, 'nofile-facade.log'),
        t,
      },
    );
    const url = `http://127.0.0.1:${port}`;
    await servedMeanwhile(url, 'fixed/ws');
    const attackers: Socket[] = [];
    t.after(() => {
      for (const s of attackers) s.destroy();
    });
    // 1200 sockets that never send a byte, 30 from each of 40 addresses.
    for (let i = 2; i < 42; i++) {
      attackers.push(...(await slowloris(port, `127.0.0.${i}`, 30, { silent: true })));
    }
    await untilAtMostOpen(attackers, 384);
    await servedMeanwhile(url, 'fixed/ws');
    const text = (await get(`${url}/metrics`)).body.toString();
    assert.match(text, /strata_facade_connections_dropped_total\{reason="shed"\} \d+/);
    assert.equal(facadeProc.proc.exitCode, null);
  });
});
