// The JSON log lines of `strata up` as a log shipper reads them: every line one JSON object whose keys are
// each there once (a repeated key is kept by one parser and dropped by the next, so which part of the
// process a line came from depended on the reader), and each line still says which part wrote it.
import assert from 'node:assert/strict';
import { readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { test } from 'node:test';
import { removeTempDir, tempDir } from '../helpers/tmp.ts';
import { startStrataUp } from '../helpers/up.ts';

/** The keys of a JSON object's top level, in order and with repeats, which JSON.parse hides. */
export function topLevelKeys(json: string): string[] {
  const keys: string[] = [];
  let depth = 0;
  let expectKey = false;
  for (let i = 0; i < json.length; i++) {
    const c = json[i];
    if (c === '"') {
      let j = i + 1;
      while (json[j] !== '"') j += json[j] === '\\' ? 2 : 1;
      if (depth === 1 && expectKey) keys.push(JSON.parse(json.slice(i, j + 1)) as string);
      expectKey = false;
      i = j;
    } else if (c === '{' || c === '[') {
      depth++;
      expectKey = depth === 1;
    } else if (c === '}' || c === ']') {
      depth--;
    } else if (c === ',' && depth === 1) {
      expectKey = true;
    }
  }
  return keys;
}

test('topLevelKeys sees repeats and skips nested objects and strings', () => {
  assert.deepEqual(topLevelKeys('{"a":1,"b":{"a":2,"c":"x\\",\\"d"},"a":[{"e":1}]}'), ['a', 'b', 'a']);
});

test('strata up logs JSON lines without repeated keys, each naming its part', async (t) => {
  const work = await tempDir('log-lines');
  t.after(() => removeTempDir(work));
  const config = join(work, 'up.yaml');
  await writeFile(
    config,
    [
      'daemon: { address: strata.sock, snapshotter: native }',
      'registry: { listen: "127.0.0.1:0", shutdownGraceSeconds: 1 }',
      'specs: { listen: "127.0.0.1:0" }',
      'builder: { listen: "127.0.0.1:0", storageDriver: vfs }',
      'metrics: "127.0.0.1:0"',
      '',
    ].join('\n'),
  );
  const { server } = await startStrataUp({ work, root: join(work, 'root'), config, n: 1 });
  await server.stop();

  const lines = (await readFile(join(work, 'up-1.log'), 'utf8')).split('\n').filter((l) => l.startsWith('{'));
  assert.ok(lines.length > 5, 'up logged its start and stop');
  const parts = new Set<string>();
  for (const line of lines) {
    const keys = topLevelKeys(line);
    assert.deepEqual(
      keys.filter((k, i) => keys.indexOf(k) !== i),
      [],
      `a key repeated in ${line}`,
    );
    const fields = JSON.parse(line) as Record<string, unknown>;
    parts.add([fields.service, fields.component].filter((x) => x !== undefined).join('/'));
  }
  // The gRPC servers of the daemon and of the builder are told apart, not both just "grpc".
  assert.ok(parts.has('daemon/grpc'), [...parts].join(', '));
  assert.ok(parts.has('builder/grpc'), [...parts].join(', '));
});
