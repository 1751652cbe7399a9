// Hostile-input corpus for the facade: hosts, clients and files that try to stall it. Each attack runs at
// a size that takes seconds and shows the facade answering other clients while it goes on. The base image
// comes from a real docker-registry; the hostile parties are small loopback servers and sockets made here.
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { writeFile } from 'node:fs/promises';
import type { AddressInfo } from 'node:net';
import { createServer as createTcpServer, type Socket, type Server as TcpServer } from 'node:net';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { pino } from 'pino';
import { Registry } from 'prom-client';
import { facadeConfigFrom } from '../../src/facade/config.ts';
import { type FacadeApp, startFacade } from '../../src/facade/http/app.ts';
import { type PushedImage, pushBusybox } from '../helpers/images.ts';
import { waitFor } from '../helpers/process.ts';
import { startRegistry, type TestRegistry } from '../helpers/registry.ts';
import { removeTempDir, tempDir } from '../helpers/tmp.ts';

const logger = pino({ level: 'silent' });

function sha256(b: Uint8Array): string {
  return `sha256:${createHash('sha256').update(b).digest('hex')}`;
}

async function metric(app: FacadeApp, line: string): Promise<number> {
  const text = (await get(`${app.url}/metrics`)).body.toString();
  const found = text.split('\n').find((l) => l.startsWith(`${line} `));
  return found ? Number(found.split(' ').pop()) : 0;
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
});
