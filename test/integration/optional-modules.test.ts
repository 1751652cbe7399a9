// Each service loads only what its config uses: a node's facade restarts on every rollout, and Redis's
// client (~650 modules), the token verifier, gRPC and the metadata database (a native module) more than
// doubled the facade's start-up time and grew its idle memory when none of them was configured.
import assert from 'node:assert/strict';
import { readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { test } from 'node:test';
import { freePort, isListening } from '../helpers/ports.ts';
import { spawnServer } from '../helpers/process.ts';
import { Cleanup, tempDir } from '../helpers/tmp.ts';

const STRATA = new URL('../../bin/strata', import.meta.url).pathname;

/** A module hook that writes every module URL the process loaded to $LOADED_MODULES when it exits. */
const RECORDER = `
import { registerHooks } from 'node:module';
import { writeFileSync } from 'node:fs';
const loaded = [];
registerHooks({ load(url, context, next) { loaded.push(url); return next(url, context); } });
process.on('exit', () => writeFileSync(process.env.LOADED_MODULES, loaded.join('\\n')));
`;

const REDIS = /\/node_modules\/(@redis|redis)\//;

/**
 * Starts `strata ARGS` with the recorder, runs `use` once `ready` says so, stops it and returns the URLs of
 * the modules it loaded.
 */
async function loadedModules(
  dir: string,
  args: string[],
  ready: () => Promise<boolean>,
  use: () => Promise<void>,
): Promise<string[]> {
  const recorder = join(dir, 'recorder.mjs');
  await writeFile(recorder, RECORDER);
  const list = join(dir, 'loaded.txt');
  const server = await spawnServer(STRATA, args, {
    name: `strata ${args[0]}`,
    env: { NODE_OPTIONS: `--import=${recorder}`, LOADED_MODULES: list },
    readyCheck: ready,
  });
  try {
    await use();
  } finally {
    await server.stop();
  }
  const loaded = (await readFile(list, 'utf8')).split('\n');
  assert.ok(
    loaded.some((u) => u.includes(`/src/cli/${args[0]}.ts`)),
    'the recorder saw the command load',
  );
  return loaded;
}

function assertNotLoaded(loaded: string[], optional: [RegExp, string][]): void {
  for (const [pattern, part] of optional) {
    const found = loaded.find((u) => pattern.test(u));
    assert.equal(found, undefined, `loaded ${found} although no ${part} is configured`);
  }
}

test('a facade with a spec store, a cache and prefetch loads none of the optional parts, and reports its process', async () => {
  const cleanup = new Cleanup();
  try {
    const dir = await tempDir('facade-modules');
    cleanup.addDir(dir);
    const url = `http://127.0.0.1:${await freePort()}`;
    const config = join(dir, 'facade.yaml');
    await writeFile(
      config,
      [
        `listen: "${url.slice('http://'.length)}"`,
        `specProviders: { store: { dir: "${join(dir, 'specs')}" } }`,
        `cache: { dir: "${join(dir, 'cache')}", maxBytes: 1GiB }`,
        'prefetch: { enabled: true }',
        '',
      ].join('\n'),
    );
    const loaded = await loadedModules(
      dir,
      ['facade', '--config', config, '--log-level', 'warn'],
      async () => (await fetch(`${url}/readyz`)).status === 200,
      async () => {
        // It serves: an unknown spec is a registry error, not a failure to load something.
        assert.equal((await fetch(`${url}/v2/remote/no-such-spec/manifests/latest`)).status, 404);
        const metrics = await (await fetch(`${url}/metrics`)).text();
        for (const name of ['strata_process_resident_memory_bytes', 'strata_nodejs_eventloop_lag_seconds'])
          assert.match(metrics, new RegExp(`^${name} `, 'm'));
      },
    );
    assertNotLoaded(loaded, [
      [REDIS, 'redis'],
      [/\/node_modules\/jose\//, 'auth (bearer tokens)'],
      [/\/node_modules\/better-sqlite3\//, 'hosted'],
      [/\/src\/metadata\/db\.ts$/, 'hosted'],
      [/\/src\/api\/grpc\//, 'gRPC spec provider'],
    ]);
  } finally {
    await cleanup.run();
  }
});

test('a builder without --redis does not load Redis’s client', async () => {
  const cleanup = new Cleanup();
  try {
    const dir = await tempDir('builder-modules');
    cleanup.addDir(dir);
    const port = await freePort();
    const args = ['builder', '--listen', `127.0.0.1:${port}`, '--root', join(dir, 'root')];
    args.push('--base-repo', '127.0.0.1:9/base', '--workspace-repo', '127.0.0.1:9/ws', '--log-level', 'warn');
    const loaded = await loadedModules(
      dir,
      args,
      () => isListening(port),
      async () => {},
    );
    assertNotLoaded(loaded, [[REDIS, 'redis']]);
  } finally {
    await cleanup.run();
  }
});
