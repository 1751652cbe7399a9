import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { gzipSync } from 'node:zlib';
import { waitFor } from '../../test/helpers/process.ts';
import { digestOf } from '../oci/digest.ts';
import { BlobCache } from './blobs/cache.ts';
import type { StaticLayer } from './service.ts';
import { StaticLayers } from './static-layer.ts';

function fileLayer(layers: StaticLayer[]) {
  const l = layers[1];
  assert.equal(l?.kind, 'file');
  return l.kind === 'file' ? l.addition.layers[0]! : assert.fail();
}

async function readAll(cache: BlobCache, layer: ReturnType<typeof fileLayer>): Promise<Buffer> {
  const chunks: Buffer[] = [];
  for await (const c of (await cache.read(layer.descriptor, undefined, undefined)).stream) chunks.push(c);
  return Buffer.concat(chunks);
}

test('a static layer file is served from the cache; a reload keeps the old version for a while; a bad edit is refused', async () => {
  const dir = await mkdtemp(join(tmpdir(), 'strata-static-'));
  // Uncompressible, so the cap below holds two versions only while both are held.
  const v1 = randomBytes(40_000);
  const v2 = randomBytes(40_000);
  const cache = await BlobCache.open({ dir: join(dir, 'cache'), maxBytes: 60_000 });
  const path = join(dir, 'layer.tar.gz');
  await writeFile(path, gzipSync(v1));
  const changes: StaticLayer[][] = [];
  const refused: unknown[] = [];
  const layers = await StaticLayers.open([{ ref: 'registry.example/supervisor:1' }, { file: path }], {
    cache,
    keepMs: 5000,
    watch: false,
    onChange: (l) => changes.push(l),
    onReloadError: (err) => refused.push(err),
  });
  try {
    const first = fileLayer(layers.layers);
    assert.deepEqual(layers.layers[0], { kind: 'image', ref: 'registry.example/supervisor:1' });
    assert.equal(first.descriptor.digest, digestOf(gzipSync(v1)));
    assert.equal(first.diffId, digestOf(v1));
    assert.deepEqual(first.origin, { kind: 'static' });
    assert.deepEqual(await readAll(cache, first), gzipSync(v1));

    await writeFile(path, gzipSync(v2));
    await layers.refresh();
    const second = fileLayer(layers.layers);
    assert.equal(second.diffId, digestOf(v2));
    assert.equal(changes.length, 1);
    assert.deepEqual(fileLayer(changes[0]!), second);
    // Both versions are held, over the cap: the old one stays servable by digest.
    assert.deepEqual(await readAll(cache, first), gzipSync(v1));
    // Then it is let go, and the cap evicts it.
    await waitFor(() => !cache.has(first.descriptor.digest), 10_000, { what: 'the old version to go' });
    assert.equal(cache.has(second.descriptor.digest), true);

    // Not gzip, then a truncated gzip: refused, the version before stays.
    await writeFile(path, 'plain text');
    await layers.refresh();
    await writeFile(path, gzipSync(v1).subarray(0, 1000));
    await layers.refresh();
    assert.equal(refused.length, 2);
    assert.match(String(refused[0]), /not a gzip file/);
    assert.equal(fileLayer(layers.layers).descriptor.digest, second.descriptor.digest);
    assert.equal(changes.length, 1);
    assert.deepEqual(await readAll(cache, second), gzipSync(v2));
  } finally {
    layers.close();
    cache.close();
    await rm(dir, { recursive: true, force: true });
  }
});

test('a bad static layer file at start is an error', async () => {
  const dir = await mkdtemp(join(tmpdir(), 'strata-static-'));
  const cache = await BlobCache.open({ dir: join(dir, 'cache'), maxBytes: 1 << 20 });
  try {
    const path = join(dir, 'layer.tar.gz');
    await writeFile(path, 'not gzip');
    await assert.rejects(StaticLayers.open([{ file: path }], { cache, keepMs: 1000 }), /not a gzip file/);
    await assert.rejects(
      StaticLayers.open([{ file: join(dir, 'missing.tar.gz') }], { cache, keepMs: 1000 }),
      /missing.tar.gz/,
    );
  } finally {
    cache.close();
    await rm(dir, { recursive: true, force: true });
  }
});

test('a watched static layer file is reloaded when it changes', async () => {
  const dir = await mkdtemp(join(tmpdir(), 'strata-static-'));
  const cache = await BlobCache.open({ dir: join(dir, 'cache'), maxBytes: 1 << 20 });
  const path = join(dir, 'layer.tar.gz');
  await writeFile(path, gzipSync('one'));
  const reloaded: string[] = [];
  const layers = await StaticLayers.open([{ ref: 'registry.example/supervisor:1' }, { file: path }], {
    cache,
    keepMs: 1000,
    onReload: (p) => reloaded.push(p),
  });
  try {
    await writeFile(path, gzipSync('two'));
    await waitFor(() => fileLayer(layers.layers).diffId === digestOf('two'), 10_000, {
      what: 'the watcher to reload the file',
    });
    assert.deepEqual(reloaded, [path]);
  } finally {
    layers.close();
    cache.close();
    await rm(dir, { recursive: true, force: true });
  }
});
