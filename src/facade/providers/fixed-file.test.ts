import assert from 'node:assert/strict';
import { appendFile, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { imageSpecJson } from '../../api/convert/image-spec-json.ts';
import { isNotFound, messageOf } from '../../errors.ts';
import { FixedFileSpecProvider } from './fixed-file.ts';

async function withFile(text: string, fn: (path: string) => Promise<void>): Promise<void> {
  const dir = await mkdtemp(join(tmpdir(), 'strata-fixed-test-'));
  const path = join(dir, 'specs.yaml');
  await writeFile(path, text);
  try {
    await fn(path);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

const spec = (name: string) => `${name}:\n  baseRef: example.com/${name}:1\n`;

test('an empty or malformed rewrite keeps the specs loaded before; a later good write replaces them', async () => {
  await withFile(spec('one') + spec('two'), async (path) => {
    const errors: string[] = [];
    const loads: number[] = [];
    const p = await FixedFileSpecProvider.open(path, {
      json: imageSpecJson,
      settleMs: 20,
      onReloadError: (err) => errors.push(messageOf(err)),
      onReload: (n) => loads.push(n),
    });
    try {
      assert.deepEqual(loads, [2]);

      // `cat new > specs.yaml` truncates first: the empty file is a write in progress, not "no specs".
      await writeFile(path, '');
      assert.equal((await p.getSpec('one')).baseRef, 'example.com/one:1');
      assert.equal((await p.getSpec('two')).baseRef, 'example.com/two:1');
      assert.equal(errors.length, 1);
      assert.match(errors[0]!, /empty; the 2 specs loaded before stay \(write \{\} to remove them all\)/);

      // A comment-only file is empty too; a half-written JSON document is malformed.
      await writeFile(path, '# nothing yet\n');
      await p.getSpec('one');
      await writeFile(path, '{"one": {"baseRef": "exa');
      await p.getSpec('one');
      await p.getSpec('two');
      // Each bad version is reported once, not once per request.
      assert.equal(errors.length, 3);
      assert.equal(p.size, 2);

      await writeFile(path, spec('three'));
      assert.equal((await p.getSpec('three')).baseRef, 'example.com/three:1');
      await assert.rejects(p.getSpec('one'), isNotFound);
      assert.deepEqual(loads, [2, 1]);

      // Removing every spec is said explicitly.
      await writeFile(path, '{}\n');
      await assert.rejects(p.getSpec('three'), isNotFound);
      assert.equal(p.size, 0);
      assert.equal(errors.length, 3);
    } finally {
      p.close();
    }
  });
});

test('an empty file at start means no specs yet', async () => {
  await withFile('', async (path) => {
    const p = await FixedFileSpecProvider.open(path, {
      json: imageSpecJson,
      settleMs: 20,
    });
    try {
      assert.equal(p.size, 0);
      await writeFile(path, spec('one'));
      assert.equal((await p.getSpec('one')).baseRef, 'example.com/one:1');
    } finally {
      p.close();
    }
  });
});

test('a file still being written is read once it has settled, not as the part written so far', async () => {
  await withFile(spec('one'), async (path) => {
    const p = await FixedFileSpecProvider.open(path, {
      json: imageSpecJson,
      settleMs: 1000,
    });
    try {
      // The first half is valid YAML on its own and would drop `two`.
      await writeFile(path, spec('one'));
      const asked = p.getSpec('two');
      await new Promise((r) => setTimeout(r, 50));
      await appendFile(path, spec('two'));
      assert.equal((await asked).baseRef, 'example.com/two:1');
    } finally {
      p.close();
    }
  });
});
