import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { test } from 'node:test';
import { promisify } from 'node:util';

const run = promisify(execFile);

/** Runs a phase in a fresh process (subscriptions are process-wide) with `env`; returns its stderr. */
async function phaseIn(env: Record<string, string>): Promise<string> {
  const script = `
    import { traceToStderr } from './src/server/trace-log.ts';
    import { tracePhase } from './src/trace.ts';
    traceToStderr();
    traceToStderr();
    tracePhase('unit-phase')('some detail');
  `;
  const { stderr } = await run(process.execPath, ['--input-type=module', '-e', script], {
    env: { ...process.env, STRATA_TRACE: '', ...env },
  });
  return stderr;
}

test('with STRATA_TRACE set, each phase is one stderr line', async () => {
  const lines = (await phaseIn({ STRATA_TRACE: '1' })).split('\n').filter((l) => l.startsWith('strata-'));
  assert.equal(lines.length, 1, 'subscribing twice still writes once');
  assert.match(lines[0]!, /^strata-trace \d+ \d+ unit-phase \d+\.\d cpu=\d+ some detail$/);
});

test('without STRATA_TRACE (or with 0) nothing is written', async () => {
  assert.doesNotMatch(await phaseIn({}), /strata-trace/);
  assert.doesNotMatch(await phaseIn({ STRATA_TRACE: '0' }), /strata-trace/);
});
