import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { test } from 'node:test';
import { within } from '../../test/helpers/process.ts';

// A service that takes its time to start (until told on stdin), as `strata facade` and `strata up` do
// while they open their stores; then it runs until signalled, reloading on SIGHUP.
const SERVICE = `
const { StartupHup, runUntilSignalled } = await import(${JSON.stringify(new URL('./until-signalled.ts', import.meta.url).href)});
const startup = new StartupHup();
const say = (line) => process.stdout.write(line + '\\n');
const logger = { info() {}, warn() {}, error() {} };
say('starting');
for await (const _ of process.stdin) break;
say('started');
// What keeps a real service alive (its listeners), until it stops.
const alive = setInterval(() => {}, 60_000);
const stop = async () => {
  clearInterval(alive);
  say('stopped');
};
await runUntilSignalled(logger, 'service', stop, async () => say('reloaded'), startup);
`;

test('a SIGHUP while the service starts is a reload once it has started, not the end of the process', async () => {
  const child = spawn(process.execPath, ['--input-type=module', '-e', SERVICE], {
    stdio: ['pipe', 'pipe', 'inherit'],
  });
  let out = '';
  child.stdout.setEncoding('utf8').on('data', (chunk: string) => {
    out += chunk;
  });
  const exited = once(child, 'exit') as Promise<[number | null, NodeJS.Signals | null]>;
  try {
    const saw = async (line: string) => {
      while (!out.split('\n').includes(line)) await within(once(child.stdout, 'data'), 30_000, line);
    };
    await saw('starting');
    child.kill('SIGHUP');
    child.kill('SIGHUP');
    child.stdin.write('go\n');
    await saw('reloaded');
    child.kill('SIGTERM');
    const [code, signal] = await within(exited, 30_000, 'the service to stop');
    assert.deepEqual([code, signal], [0, null]);
    assert.deepEqual(out.trim().split('\n'), ['starting', 'started', 'reloaded', 'stopped']);
  } finally {
    child.kill('SIGKILL');
  }
});
