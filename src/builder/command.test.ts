// The builder's child processes hand their output over line by line: the last line is handed over even
// without a newline, and a character whose bytes arrive in two chunks stays whole.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { CommandFailed, runCommand } from './command.ts';

async function linesOf(script: string): Promise<string[]> {
  const lines: string[] = [];
  await runCommand('sh', ['-c', script], { timeoutMs: 30_000, onLine: (l) => lines.push(l) }).catch(
    (err: unknown) => {
      if (!(err instanceof CommandFailed)) throw err;
    },
  );
  return lines;
}

test('the last line of output is handed over without its newline, on stdout and on stderr', async () => {
  assert.deepEqual(await linesOf("printf 'one\\ntwo'"), ['one', 'two']);
  assert.deepEqual(await linesOf("printf 'out\\n'; printf 'err' >&2"), ['out', 'err']);
  // A failing command: the last words of the failure are in its tail and in the lines.
  const lines: string[] = [];
  const err = await runCommand('sh', ['-c', "printf 'fatal: no newline' >&2; exit 2"], {
    timeoutMs: 30_000,
    onLine: (l) => lines.push(l),
  }).catch((e: unknown) => e);
  assert.ok(err instanceof CommandFailed);
  assert.equal(err.tail, 'fatal: no newline');
  assert.deepEqual(lines, ['fatal: no newline']);
});

test('a character split across two writes stays whole', async () => {
  // "é" is c3 a9; the pause puts its two bytes in separate reads.
  assert.deepEqual(await linesOf("printf 'caf\\303'; sleep 0.2; printf '\\251\\n'"), ['café']);
});
