// Hostile-input corpus for `strata pull`: registries that lie to the client. Each attack runs at a size
// that takes seconds against a real `strata daemon`, and the daemon answers ctr meanwhile.
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { readdir, readFile, stat } from 'node:fs/promises';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { join } from 'node:path';
import { test } from 'node:test';
import { startDaemon } from '../helpers/daemon.ts';
import { runProcess } from '../helpers/process.ts';

const BIN = new URL('../../bin/strata', import.meta.url).pathname;

/** Bytes held by the daemon's content ingests, however the API lists them. */
async function ingestBytes(root: string): Promise<number> {
  const dir = join(root, 'content', 'ingest');
  let total = 0;
  for (const entry of await readdir(dir, { recursive: true, withFileTypes: true })) {
    if (entry.isFile()) total += (await stat(join(entry.parentPath, entry.name))).size;
  }
  return total;
}

function sha256(b: Uint8Array): string {
  return `sha256:${createHash('sha256').update(b).digest('hex')}`;
}

/**
 * A registry on loopback with one image whose only layer is declared as 1000 bytes and served as an
 * endless chunked body, ignoring Range. To keep the test bounded whatever the client does, each answer's
 * connection is dropped after `cap` bytes, as a network failure would. Counts what it serves.
 */
async function endlessLayerRegistry(cap: number) {
  const layer = Buffer.alloc(1000, 0x61);
  const config = Buffer.from(
    JSON.stringify({
      architecture: 'amd64',
      os: 'linux',
      rootfs: { type: 'layers', diff_ids: [sha256(layer)] },
      config: {},
    }),
  );
  const manifest = Buffer.from(
    JSON.stringify({
      schemaVersion: 2,
      mediaType: 'application/vnd.oci.image.manifest.v1+json',
      config: {
        mediaType: 'application/vnd.oci.image.config.v1+json',
        digest: sha256(config),
        size: config.length,
      },
      layers: [{ mediaType: 'application/vnd.oci.image.layer.v1.tar', digest: sha256(layer), size: 1000 }],
    }),
  );
  const stats = { layerRequests: 0, layerBytes: 0 };
  const chunk = Buffer.alloc(64 * 1024, 0x61);
  const server = http.createServer((req, res) => {
    const url = req.url ?? '';
    const send = (body: Buffer, type: string) => {
      res.writeHead(200, {
        'content-type': type,
        'content-length': body.length,
        'docker-content-digest': sha256(body),
      });
      res.end(req.method === 'HEAD' ? undefined : body);
    };
    if (url === '/v2/') return send(Buffer.from('{}'), 'application/json');
    if (url.startsWith('/v2/evil/manifests/'))
      return send(manifest, 'application/vnd.oci.image.manifest.v1+json');
    if (url === `/v2/evil/blobs/${sha256(config)}`) return send(config, 'application/octet-stream');
    if (url === `/v2/evil/blobs/${sha256(layer)}`) {
      stats.layerRequests++;
      // No Content-Length: chunked, and it never ends on its own.
      res.writeHead(200, { 'content-type': 'application/octet-stream' });
      if (req.method === 'HEAD') return res.end();
      let sent = 0;
      const pump = () => {
        while (sent < cap) {
          sent += chunk.length;
          stats.layerBytes += chunk.length;
          if (!res.write(chunk)) return void res.once('drain', pump);
        }
        res.destroy();
      };
      res.on('close', () => res.off('drain', pump));
      pump();
      return;
    }
    res.writeHead(404).end();
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const host = `127.0.0.1:${(server.address() as AddressInfo).port}`;
  return {
    ref: `${host}/evil:latest`,
    layerDigest: sha256(layer),
    stats,
    close: () =>
      new Promise<void>((r) => {
        server.closeAllConnections();
        server.close(() => r());
      }),
  };
}

test('strata pull stops an endless layer at its declared size, does not resume it and leaves no ingest', {
  timeout: 300_000,
}, async (t) => {
  // Debug logs name every call, so the test sees the client remove the ingest itself.
  const daemon = await startDaemon({ t, logLevel: 'debug' });
  const reg = await endlessLayerRegistry(64 * 1024 * 1024);
  t.after(() => reg.close());

  const pull = runProcess(
    BIN,
    ['pull', '--address', daemon.address, '--plain-http', '--progress', 'none', reg.ref],
    { timeoutMs: 240_000 },
  );
  // The daemon serves other clients while the pull goes on.
  assert.match(await daemon.ctrOk(['version']), /Server:/);
  const r = await pull;
  const active = await daemon.ctrOk(['content', 'active']);
  const ingest = await ingestBytes(daemon.root);
  t.diagnostic(JSON.stringify({ exit: r.code, ...reg.stats, active, ingest, stderr: r.stderr.slice(-300) }));

  assert.notEqual(r.code, 0, r.stdout);
  assert.match(r.stderr, /more than the 1000 bytes the descriptor declares/);
  // One request, cut at the first chunk past 1000 bytes (what the server had written by then is all
  // this counts: its own buffers, nowhere near the cap).
  assert.equal(reg.stats.layerRequests, 1);
  assert.ok(reg.stats.layerBytes < 64 * 1024 * 1024, `${reg.stats.layerBytes} bytes served`);
  // No ingest stays behind to be resumed.
  assert.equal(active.trim().split('\n').length, 1, active);
  assert.equal(ingest, 0);
  const calls = (await readFile(daemon.logFile, 'utf8'))
    .split('\n')
    .filter((l) => l.includes('"grpc call"'))
    .map((l) => JSON.parse(l) as { method: string; code: string });
  // Removed by the pull when the bytes proved wrong, not left for the lease's garbage collection.
  assert.ok(
    calls.some((c) => c.method === '/containerd.services.content.v1.Content/Abort' && c.code === 'OK'),
    'the pull aborted the ingest',
  );
  // The layer's own row is gone; the manifest's gc.ref labels may still name it, so only the DIGEST
  // column counts.
  const stored = (await daemon.ctrOk(['content', 'ls']))
    .split('\n')
    .slice(1)
    .map((line) => line.split('\t')[0]);
  assert.ok(!stored.includes(reg.layerDigest), stored.join(' '));
});
