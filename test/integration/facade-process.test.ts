// `strata facade` as bin/strata starts it: it runs WebAssembly (undici's HTTP parser) on V8's baseline
// compiler without tiering it up.
import assert from 'node:assert/strict';
import { readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { spawnFacade } from '../helpers/facade.ts';
import { freePort } from '../helpers/ports.ts';
import { removeTempDir, tempDir } from '../helpers/tmp.ts';

describe('strata facade process', () => {
  let work: string;

  before(async () => {
    work = await tempDir('facade-process');
  });

  after(async () => {
    if (work) await removeTempDir(work);
  });

  /** A facade over an empty spec store (with its own compile cache `compileCache`, when given). */
  async function start(name: string, compileCache?: string) {
    const port = await freePort();
    const url = `http://127.0.0.1:${port}`;
    const config = join(work, `${name}.yaml`);
    await writeFile(
      config,
      JSON.stringify({
        listen: `127.0.0.1:${port}`,
        specProviders: { store: { dir: join(work, name, 'specs') } },
        cache: { dir: join(work, name, 'cache') },
      }),
    );
    return spawnFacade({
      config,
      url,
      logFile: join(work, `${name}.log`),
      ...(compileCache && { env: { NODE_COMPILE_CACHE: compileCache } }),
    });
  }

  test('WebAssembly stays on the baseline compiler', async (t) => {
    const server = await start('wasm');
    t.after(() => server.stop());
    const args = (await readFile(`/proc/${server.proc.pid}/cmdline`, 'utf8')).split('\0');
    // Both: without dynamic tiering alone, V8 would compile every function with its optimizing compiler.
    assert.ok(args.includes('--no-wasm-dynamic-tiering'), args.join(' '));
    assert.ok(args.includes('--no-wasm-tier-up'), args.join(' '));
  });
});
