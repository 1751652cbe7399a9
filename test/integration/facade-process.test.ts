// `strata facade` as bin/strata starts it: it writes Node's compile cache as soon as it has started, so a
// facade that is killed instead of stopped leaves it for the next start, and it runs WebAssembly (undici's
// HTTP parser) on V8's baseline compiler without tiering it up.
import assert from 'node:assert/strict';
import { once } from 'node:events';
import { readdir, readFile, writeFile } from 'node:fs/promises';
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

  /** The files in a compile cache directory (Node keeps them in a subdirectory per Node and V8 version). */
  async function cacheFiles(dir: string): Promise<string[]> {
    const files: string[] = [];
    for (const entry of await readdir(dir, { recursive: true, withFileTypes: true }).catch(() => [])) {
      if (entry.isFile()) files.push(join(entry.parentPath, entry.name));
    }
    return files;
  }

  test('a facade killed once it is ready has written its compile cache', async (t) => {
    const compileCache = join(work, 'compile-cache');
    const server = await start('killed', compileCache);
    t.after(() => server.stop());
    // Ready: it has started. No clean exit follows, so what is in the cache was written by then.
    const exited = once(server.proc, 'exit');
    server.proc.kill('SIGKILL');
    await exited;
    // One file per module compiled and per TypeScript file stripped: the facade loads well over 100.
    const files = await cacheFiles(compileCache);
    assert.ok(files.length > 100, `${files.length} compile cache files`);
  });

  test('WebAssembly stays on the baseline compiler', async (t) => {
    const server = await start('wasm');
    t.after(() => server.stop());
    const args = (await readFile(`/proc/${server.proc.pid}/cmdline`, 'utf8')).split('\0');
    // Both: without dynamic tiering alone, V8 would compile every function with its optimizing compiler.
    assert.ok(args.includes('--no-wasm-dynamic-tiering'), args.join(' '));
    assert.ok(args.includes('--no-wasm-tier-up'), args.join(' '));
  });
});
