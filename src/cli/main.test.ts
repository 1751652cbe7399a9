import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { test } from 'node:test';
import { promisify } from 'node:util';
import { VERSION } from '../version.ts';

const run = promisify(execFile);
const bin = new URL('../../bin/strata', import.meta.url).pathname;

test('strata --version prints the package version', async () => {
  const { stdout } = await run(bin, ['--version']);
  assert.equal(stdout.trim(), VERSION);
});

test('strata --help lists the program and its options', async () => {
  const { stdout } = await run(bin, ['--help']);
  assert.match(stdout, /Usage: strata/);
  assert.match(stdout, /--version/);
});
