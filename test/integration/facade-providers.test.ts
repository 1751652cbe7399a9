// Spec providers for real: the own store served over gRPC (`strata spec serve`) and asked by a facade
// running as `strata facade` (a separate process, stopped with SIGTERM); the fixed-spec file reloaded when
// it changes; `strata spec put|get|ls|rm` on a data dir and over gRPC.
import assert from 'node:assert/strict';
import { readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { test } from 'node:test';
import { pino } from 'pino';
import { Registry } from 'prom-client';
import { GrpcSpecProvider } from '../../src/api/clients/spec-provider.ts';
import { imageSpecJson } from '../../src/api/convert/image-spec-json.ts';
import { createGrpcServer } from '../../src/api/grpc/server.ts';
import { specProviderService } from '../../src/api/services/spec-provider.ts';
import { isNotFound } from '../../src/errors.ts';
import { SpecStore } from '../../src/facade/providers/spec-store.ts';
import { startFacade } from '../../src/server/facade.ts';
import { facadeConfigFrom } from '../../src/server/facade-config.ts';
import { pushBusybox, pushMultiLayer, skopeoInspect } from '../helpers/images.ts';
import { freePort } from '../helpers/ports.ts';
import { runCommand, spawnServer, waitFor } from '../helpers/process.ts';
import { startRegistry } from '../helpers/registry.ts';
import { removeTempDir, tempDir } from '../helpers/tmp.ts';

const logger = pino({ level: 'silent' });
const NODE = process.execPath;
const MAIN = new URL('../../src/cli/main.ts', import.meta.url).pathname;

test('strata spec and strata facade with a gRPC spec provider', async (t) => {
  const reg = await startRegistry({ t });
  const busybox = await pushBusybox(reg, 'base/busybox');
  const ide = await pushMultiLayer(reg, 'ide/code');
  const work = await tempDir('facade-providers');
  t.after(() => removeTempDir(work));
  const data = join(work, 'specs');

  const strata = (args: string[]) => runCommand(NODE, [MAIN, ...args], { timeoutMs: 60_000 });
  await strata([
    'spec',
    'put',
    'ws-a',
    '--spec-store',
    data,
    '--base-ref',
    busybox.ref,
    '--ide-ref',
    ide.ref,
  ]);
  await writeFile(join(work, 'b.yaml'), `baseRef: ${busybox.ref}\n`);
  await strata(['spec', 'put', 'team/ws-b', join(work, 'b.yaml'), '--spec-store', data]);
  assert.deepEqual((await strata(['spec', 'ls', '--spec-store', data])).trim().split('\n'), [
    'team/ws-b',
    'ws-a',
  ]);
  assert.deepEqual(JSON.parse(await strata(['spec', 'get', 'ws-a', '--spec-store', data])), {
    baseRef: busybox.ref,
    ideRef: ide.ref,
  });
  await assert.rejects(strata(['spec', 'put', 'Bad_ID', '--spec-store', data, '--base-ref', busybox.ref]));
  await assert.rejects(strata(['spec', 'put', 'ws-c', '--spec-store', data]), /baseRef is required/);

  // The store as a gRPC SpecProvider, asked by the CLI and by a facade process.
  const grpcPort = await freePort();
  await spawnServer(
    NODE,
    [MAIN, 'spec', 'serve', '--spec-store', data, '--listen', `127.0.0.1:${grpcPort}`],
    {
      readyCheck: async () => {
        const p = new GrpcSpecProvider({ address: `127.0.0.1:${grpcPort}`, timeoutMs: 500 });
        try {
          await p.getSpec('ws-a');
          return true;
        } catch {
          return false;
        } finally {
          p.close();
        }
      },
      t,
    },
  );
  assert.equal(
    JSON.parse(await strata(['spec', 'get', 'team/ws-b', '--address', `127.0.0.1:${grpcPort}`])).baseRef,
    busybox.ref,
  );

  const port = await freePort();
  const facade = await spawnServer(
    NODE,
    [
      MAIN,
      'facade',
      '--listen',
      `127.0.0.1:${port}`,
      '--spec-provider',
      `127.0.0.1:${grpcPort}`,
      '--cache-dir',
      join(work, 'cache'),
      '--cache-max',
      '100MiB',
    ],
    {
      readyCheck: async () =>
        (await fetch(`http://127.0.0.1:${port}/readyz`).catch(() => undefined))?.status === 200,
      logFile: join(work, 'facade.log'),
      t,
    },
  );
  const raw = (await skopeoInspect(`127.0.0.1:${port}/remote/ws-a:latest`, { raw: true })) as {
    layers: unknown[];
  };
  assert.equal(raw.layers.length, 1 + ide.layers);
  const nested = (await skopeoInspect(`127.0.0.1:${port}/remote/team/ws-b:latest`, { raw: true })) as {
    layers: unknown[];
  };
  assert.equal(nested.layers.length, 1);

  // Removed from the store, the provider says NotFound (and so the facade, once its spec cache expires).
  await strata(['spec', 'rm', 'ws-a', '--spec-store', data]);
  await assert.rejects(strata(['spec', 'rm', 'ws-a', '--spec-store', data]), /not found/);
  const asker = new GrpcSpecProvider({ address: `127.0.0.1:${grpcPort}` });
  await assert.rejects(asker.getSpec('ws-a'), isNotFound);
  asker.close();
  const unknown = await fetch(`http://127.0.0.1:${port}/v2/remote/never-there/manifests/latest`);
  assert.equal(unknown.status, 404);
  assert.equal(
    ((await unknown.json()) as { errors: { code: string }[] }).errors[0]?.code,
    'MANIFEST_UNKNOWN',
  );

  await facade.stop();
  const log = await readFile(join(work, 'facade.log'), 'utf8');
  const lines = log
    .split('\n')
    .filter((l) => l.startsWith('{'))
    .map((l) => JSON.parse(l) as Record<string, unknown>);
  const request = lines.find((l) => l.msg === 'request' && l.route === 'manifest');
  assert.ok(request, 'a JSON line per request');
  assert.equal(typeof request.reqId, 'string');
  assert.equal(request.id, 'ws-a');
  assert.ok(
    lines.some((l) => l.msg === 'facade stopped'),
    'SIGTERM stops the facade cleanly',
  );
});

test('fixed specs are reloaded when the file changes; a bad edit keeps the old ones', async (t) => {
  const reg = await startRegistry({ t });
  const busybox = await pushBusybox(reg, 'base/busybox');
  const ide = await pushMultiLayer(reg, 'ide/code');
  const work = await tempDir('facade-fixed');
  t.after(() => removeTempDir(work));
  const fixedFile = join(work, 'fixed.yaml');
  await writeFile(fixedFile, `one:\n  baseRef: ${busybox.ref}\n`);
  const app = await startFacade(
    facadeConfigFrom(
      { listen: '127.0.0.1:0', specProviders: { fixedFile }, cache: { dir: join(work, 'cache') } },
      work,
    ),
    { logger, registry: new Registry() },
  );
  t.after(() => app.close());
  const status = async (name: string) => (await fetch(`${app.url}/v2/fixed/${name}/manifests/latest`)).status;
  assert.equal(await status('one'), 200);
  assert.equal(await status('two'), 404);

  await writeFile(
    fixedFile,
    `one:\n  baseRef: ${busybox.ref}\ntwo:\n  baseRef: ${busybox.ref}\n  ideRef: ${ide.ref}\n`,
  );
  await waitFor(async () => (await status('two')) === 200, 10_000);

  await writeFile(fixedFile, 'one: [this is not a spec\n');
  // Give the watcher its turn; the old specs must still be served.
  await new Promise((r) => setTimeout(r, 300));
  assert.equal(await status('two'), 200);
});

/** A spec store in `work` holding spec `ws` (base `example.com/base:1`). */
async function storeWithWs(work: string): Promise<SpecStore> {
  const store = new SpecStore(join(work, 'store'), imageSpecJson);
  await store.put('ws', {
    baseRef: 'example.com/base:1',
    ideRef: '',
    supervisorRef: '',
    ideLayerRefs: [],
    contentLayers: [],
  });
  return store;
}

test('a remote provider that is down does not hide a spec the next one has', async (t) => {
  const work = await tempDir('facade-composite');
  t.after(() => removeTempDir(work));
  const store = await storeWithWs(work);
  const server = createGrpcServer({ logger, services: [specProviderService(store)] });
  t.after(() => server.shutdown());
  const port = await server.listenTcp('127.0.0.1', 0);
  const deadPort = await freePort();
  const { CompositeSpecProvider } = await import('../../src/facade/providers/provider.ts');
  const dead = new GrpcSpecProvider({ address: `127.0.0.1:${deadPort}`, timeoutMs: 300 });
  const live = new GrpcSpecProvider({ address: `127.0.0.1:${port}`, timeoutMs: 2000 });
  t.after(() => {
    dead.close();
    live.close();
  });
  const composite = new CompositeSpecProvider([dead, live]);
  assert.equal((await composite.getSpec('ws')).baseRef, 'example.com/base:1');
  // Missing everywhere, but one provider failed: that failure is reported, not NotFound.
  await assert.rejects(composite.getSpec('missing'), (err) => !isNotFound(err));
  await assert.rejects(new CompositeSpecProvider([live]).getSpec('missing'), isNotFound);
});

test('a remote provider down for a while is asked again within seconds of its return', {
  timeout: 120_000,
}, async (t) => {
  const work = await tempDir('facade-provider-back');
  t.after(() => removeTempDir(work));
  const store = await storeWithWs(work);
  const port = await freePort();
  const provider = new GrpcSpecProvider({ address: `127.0.0.1:${port}`, timeoutMs: 1000 });
  t.after(() => provider.close());
  // Down for 50 s while workspaces keep asking: gRPC's reconnect backoff grows with every failed attempt
  // (to 120 s by default), and a call made during a backoff fails at once without trying.
  const downUntil = Date.now() + 50_000;
  while (Date.now() < downUntil) {
    await assert.rejects(provider.getSpec('ws'));
    await new Promise((r) => setTimeout(r, 250));
  }
  const server = createGrpcServer({ logger, services: [specProviderService(store)] });
  t.after(() => server.shutdown());
  await server.listenTcp('127.0.0.1', port);
  const spec = await waitFor(() => provider.getSpec('ws').catch(() => undefined), 5000, {
    intervalMs: 250,
    what: 'the spec once the provider is back',
  });
  assert.equal(spec.baseRef, 'example.com/base:1');
});
