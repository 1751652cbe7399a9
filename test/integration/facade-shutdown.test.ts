// Graceful shutdown of a real `strata facade` process: on SIGTERM readiness goes false and new requests get
// 503 (the listener stays open), a blob download in flight (a content layer the test's host drips out
// slowly) finishes with every byte, and then the process exits 0. With a short deadline, the download still
// running at the deadline is cut (the client never sees it complete) and the process exits 0 all the same.
import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import { writeFile } from 'node:fs/promises';
import { createServer, get as httpGet, type IncomingMessage, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { spawnFacade } from '../helpers/facade.ts';
import { type PushedImage, pushBusybox } from '../helpers/images.ts';
import { freePort } from '../helpers/ports.ts';
import { type ServerProcess, waitFor } from '../helpers/process.ts';
import { startRegistry, type TestRegistry } from '../helpers/registry.ts';
import { removeTempDir, tempDir } from '../helpers/tmp.ts';

const LAYER = randomBytes(256 * 1024);
const LAYER_DIGEST = `sha256:${createHash('sha256').update(LAYER).digest('hex')}`;

/** Serves LAYER to every request, `chunk` bytes every `everyMs`. */
class DrippingHost {
  chunk = 16 * 1024;
  everyMs = 100;
  private readonly server: Server;
  constructor() {
    this.server = createServer((_req, res) => {
      res.writeHead(200, { 'content-length': LAYER.length });
      let sent = 0;
      const timer = setInterval(() => {
        const end = Math.min(sent + this.chunk, LAYER.length);
        res.write(LAYER.subarray(sent, end));
        sent = end;
        if (sent === LAYER.length) {
          clearInterval(timer);
          res.end();
        }
      }, this.everyMs);
      res.on('close', () => clearInterval(timer));
    });
  }
  async listen(): Promise<string> {
    await new Promise<void>((r) => this.server.listen(0, '127.0.0.1', r));
    return `127.0.0.1:${(this.server.address() as AddressInfo).port}`;
  }
  close(): Promise<void> {
    this.server.closeAllConnections();
    return new Promise((r) => this.server.close(() => r()));
  }
}

interface Download {
  status: number;
  /** Resolves with the body once it ended in full, rejects if the connection broke first. */
  body: Promise<Buffer>;
}

/** Starts a GET and resolves once the answer's headers are in. */
function startDownload(url: string): Promise<Download> {
  return new Promise((resolve, reject) => {
    httpGet(url, { agent: false }, (res: IncomingMessage) => {
      const chunks: Buffer[] = [];
      const body = new Promise<Buffer>((done, fail) => {
        res.on('data', (c: Buffer) => chunks.push(c));
        res.on('end', () =>
          res.complete ? done(Buffer.concat(chunks)) : fail(new Error('incomplete body')),
        );
        res.on('error', fail);
        res.on('aborted', () => fail(new Error('aborted')));
      });
      body.catch(() => {});
      resolve({ status: res.statusCode ?? 0, body });
    }).on('error', reject);
  });
}

function exitOf(server: ServerProcess): Promise<{ code: number | null; at: number }> {
  return new Promise((resolve) => {
    const p = server.proc;
    if (p.exitCode !== null) resolve({ code: p.exitCode, at: Date.now() });
    else p.once('exit', (code) => resolve({ code, at: Date.now() }));
  });
}

describe('facade graceful shutdown', () => {
  let reg: TestRegistry;
  let busybox: PushedImage;
  let work: string;
  let host: DrippingHost;
  let hostPort: string;

  before(async () => {
    work = await tempDir('facade-shutdown');
    reg = await startRegistry();
    busybox = await pushBusybox(reg, 'base/busybox');
    host = new DrippingHost();
    hostPort = await host.listen();
  });

  after(async () => {
    await host?.close();
    await reg?.stop();
    if (work) await removeTempDir(work);
  });

  async function facade(name: string, graceSeconds: number) {
    const port = await freePort();
    const url = `http://127.0.0.1:${port}`;
    const specs = join(work, `${name}.json`);
    await writeFile(
      specs,
      JSON.stringify({
        ws: {
          baseRef: busybox.ref,
          contentLayer: [
            {
              remote: {
                url: `http://${hostPort}/layer.tar`,
                digest: LAYER_DIGEST,
                diffId: LAYER_DIGEST,
                mediaType: 'application/vnd.oci.image.layer.v1.tar',
                size: String(LAYER.length),
              },
            },
          ],
        },
      }),
    );
    const config = join(work, `${name}.yaml`);
    await writeFile(
      config,
      JSON.stringify({
        listen: `127.0.0.1:${port}`,
        specProviders: { fixedFile: specs },
        cache: { dir: join(work, name, 'cache') },
        plainHttpHosts: [hostPort],
        shutdownGraceSeconds: graceSeconds,
      }),
    );
    const server = await spawnFacade({ config, url, logFile: join(work, `${name}.log`), logLevel: 'info' });
    return { url, server };
  }

  test('SIGTERM: readiness false, new requests 503, the download in flight finishes, exit 0', async (t) => {
    const { url, server } = await facade('drain', 20);
    t.after(() => server.stop());
    const exited = exitOf(server);
    const download = await startDownload(`${url}/v2/fixed/ws/blobs/${LAYER_DIGEST}`);
    assert.equal(download.status, 200);
    let finishedAt = 0;
    const body = download.body.then((b) => {
      finishedAt = Date.now();
      return b;
    });

    server.proc.kill('SIGTERM');
    const ready = await waitFor(
      async () => {
        const r = await fetch(`${url}/readyz`);
        return r.status === 503 ? r : undefined;
      },
      5000,
      { what: 'readiness to go false' },
    );
    assert.deepEqual(await ready.json(), { ready: false, reason: 'shutting down' });
    const fresh = await fetch(`${url}/v2/fixed/ws/manifests/latest`, {
      headers: { accept: 'application/vnd.oci.image.manifest.v1+json' },
    });
    assert.equal(fresh.status, 503);
    assert.equal(fresh.headers.get('connection'), 'close');
    // A whole number of seconds, as RFC 9110 has it for 503.
    assert.equal(fresh.headers.get('retry-after'), '1');
    assert.equal(((await fresh.json()) as { errors: { code: string }[] }).errors[0]!.code, 'UNAVAILABLE');
    assert.equal((await fetch(`${url}/healthz`)).status, 200);

    const bytes = await body;
    assert.equal(bytes.length, LAYER.length);
    assert.ok(bytes.equals(LAYER));
    const exit = await exited;
    assert.equal(exit.code, 0, await server.logTail());
    assert.ok(exit.at >= finishedAt, 'the process waited for the download');
  });

  test('SIGTERM with a short deadline: the download still running is cut, never completed, and the exit is 0', async (t) => {
    host.everyMs = 1000; // 16 s for the whole layer
    t.after(() => {
      host.everyMs = 100;
    });
    const { url, server } = await facade('deadline', 1);
    t.after(() => server.stop());
    const exited = exitOf(server);
    const download = await startDownload(`${url}/v2/fixed/ws/blobs/${LAYER_DIGEST}`);
    assert.equal(download.status, 200);
    const signalled = Date.now();
    server.proc.kill('SIGTERM');
    await assert.rejects(download.body);
    const exit = await exited;
    assert.equal(exit.code, 0, await server.logTail());
    assert.ok(exit.at - signalled < 10_000, `exited ${exit.at - signalled} ms after SIGTERM`);
    assert.match(await server.logTail(), /shutdown deadline reached/);
  });
});
