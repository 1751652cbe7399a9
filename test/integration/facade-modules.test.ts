// `strata facade` loads only what its config uses: a node's facade restarts on every rollout, and Redis's
// client, the token verifier, gRPC and the metadata database (a native module) more than doubled its
// start-up time and grew its idle memory when none of them was configured. It reports its process's figures.
import assert from 'node:assert/strict';
import { readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { test } from 'node:test';
import { freePort } from '../helpers/ports.ts';
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

/** Modules only some configs need, each with the part of the config that needs it. */
const OPTIONAL: [RegExp, string][] = [
  [/\/node_modules\/(@redis|redis)\//, 'redis'],
  [/\/node_modules\/jose\//, 'auth (bearer tokens)'],
  [/\/node_modules\/better-sqlite3\//, 'hosted'],
  [/\/src\/metadata\/db\.ts$/, 'hosted'],
  [/\/src\/api\/grpc\//, 'a gRPC spec provider'],
];

test('a facade with a spec store, a cache and prefetch loads none of the optional parts, and reports its process', async () => {
  const cleanup = new Cleanup();
  try {
    const dir = await tempDir('facade-modules');
    cleanup.addDir(dir);
    const port = await freePort();
    const config = join(dir, 'facade.yaml');
    await writeFile(
      config,
      [
        `listen: "127.0.0.1:${port}"`,
        `specProviders: { store: { dir: "${join(dir, 'specs')}" } }`,
        `cache: { dir: "${join(dir, 'cache')}", maxBytes: 1GiB }`,
        'prefetch: { enabled: true }',
        '',
      ].join('\n'),
    );
    const recorder = join(dir, 'recorder.mjs');
    await writeFile(recorder, RECORDER);
    const list = join(dir, 'loaded.txt');
    const facade = await spawnServer(STRATA, ['facade', '--config', config, '--log-level', 'warn'], {
      name: 'strata facade',
      env: { NODE_OPTIONS: `--import=${recorder}`, LOADED_MODULES: list },
      readyCheck: async () => (await fetch(`http://127.0.0.1:${port}/readyz`)).status === 200,
    });
    cleanup.add(() => facade.stop());
    // It serves: an unknown spec is a registry error, not a failure to load something.
    const res = await fetch(`http://127.0.0.1:${port}/v2/remote/no-such-spec/manifests/latest`);
    assert.equal(res.status, 404);
    const metrics = await (await fetch(`http://127.0.0.1:${port}/metrics`)).text();
    for (const name of ['strata_process_resident_memory_bytes', 'strata_nodejs_eventloop_lag_seconds'])
      assert.match(metrics, new RegExp(`^${name} `, 'm'));
    await facade.stop();
    const loaded = (await readFile(list, 'utf8')).split('\n');
    assert.ok(
      loaded.some((u) => u.endsWith('/src/server/facade.ts')),
      'the recorder saw the facade load',
    );
    for (const [pattern, part] of OPTIONAL) {
      const found = loaded.find((u) => pattern.test(u));
      assert.equal(found, undefined, `loaded ${found} although no ${part} is configured`);
    }
  } finally {
    await cleanup.run();
  }
});
