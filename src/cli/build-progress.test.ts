import assert from 'node:assert/strict';
import { PassThrough } from 'node:stream';
import { test } from 'node:test';
import { screen } from '../../test/helpers/terminal-screen.ts';
import { BuildProgressTracker, buildOutput } from './build-progress.ts';

test('build progress: steps come from STEP n/m lines, also split across chunks and in multi-stage form', () => {
  const t = new BuildProgressTracker();
  assert.deepEqual(t.state, { phase: 'queued', step: 0, steps: 0, current: '' });
  t.setPhase('running');
  t.onLog('STEP 1/3: FROM busybox\nsome output\nSTEP 2/');
  assert.deepEqual(t.state, { phase: 'running', step: 1, steps: 3, current: 'FROM busybox' });
  t.onLog('3: RUN echo hi\r\n');
  assert.equal(t.state.step, 2);
  assert.equal(t.state.current, 'RUN echo hi');
  t.onLog('[2/2] STEP 3/3: COPY --from=0 /a /b\n');
  assert.deepEqual([t.state.step, t.state.steps, t.state.current], [3, 3, 'COPY --from=0 /a /b']);
});

test('build progress: lines that only mention STEP do not move the bar', () => {
  const t = new BuildProgressTracker();
  t.onLog('echo STEP 9/9: no\nSTEP x/3: bad\nSTEP 1/2 missing colon\n');
  assert.deepEqual([t.state.step, t.state.steps], [0, 0]);
});

/** A stream that records what is written and claims to be a terminal, as cli-progress asks. */
type Terminal = PassThrough & { isTTY: boolean; columns: number; text(): string };

function terminal(): Terminal {
  const s = new PassThrough() as Terminal;
  const chunks: Buffer[] = [];
  s.on('data', (c: Buffer) => chunks.push(c));
  Object.assign(s, {
    isTTY: true,
    columns: 120,
    cursorTo: () => true,
    clearLine: () => true,
    moveCursor: () => true,
  });
  s.text = () => Buffer.concat(chunks).toString();
  return s;
}

test('build output on a terminal: a bar with the step and phase, status and log lines above it', async () => {
  const out = terminal();
  const err = terminal();
  const o = buildOutput(out, err);
  o.status('running', '[running] reg/ws:abc: no image for this key yet');
  o.log(new TextEncoder().encode('STEP 1/2: FROM busybox\nSTEP 2/2: RUN echo hi\nhi\npartial'));
  o.finish();
  await new Promise((r) => setImmediate(r));
  const shown = err.text();
  assert.match(shown, /\[running\] reg\/ws:abc: no image for this key yet\n/);
  assert.match(shown, /STEP 2\/2: RUN echo hi\nhi\npartial\n/);
  assert.match(shown, /running \[.*\] step 2\/2 .*RUN echo hi/);
  assert.equal(out.text(), '', 'on a terminal everything goes above the bar');
});

test('build output elsewhere: status lines to stderr, the log bytes to stdout unchanged', async () => {
  const out = terminal();
  const err = terminal();
  const o = buildOutput(out, err, { tty: false });
  o.status('queued', '[queued] reg/ws:abc: waiting (position 2)');
  o.log(new TextEncoder().encode('STEP 1/1: FROM x\n'));
  o.finish();
  await new Promise((r) => setImmediate(r));
  assert.equal(err.text(), '[queued] reg/ws:abc: waiting (position 2)\n');
  assert.equal(out.text(), 'STEP 1/1: FROM x\n');
});

test('build output on a terminal: a log line wider than the terminal is shown whole, wrapped', async () => {
  const out = terminal();
  const err = Object.assign(terminal(), { columns: 40 });
  const o = buildOutput(out, err, { env: {} });
  const long = `error: ${'x'.repeat(90)} the end`;
  o.log(new TextEncoder().encode(`STEP 1/1: RUN make\n${long}\n`));
  o.finish();
  await new Promise((r) => setImmediate(r));
  const shown = screen(err.text(), 40);
  assert.equal(shown.join(''), `STEP 1/1: RUN make${long}`);
});

test('build output on a dumb terminal: plain lines, no control sequences', async () => {
  const out = terminal();
  const err = terminal();
  const o = buildOutput(out, err, { env: { TERM: 'dumb' } });
  o.status('running', '[running] reg/ws:abc: building');
  o.log(new TextEncoder().encode('STEP 1/1: FROM x\n'));
  o.finish();
  await new Promise((r) => setImmediate(r));
  assert.equal(err.text(), '[running] reg/ws:abc: building\n');
  assert.equal(out.text(), 'STEP 1/1: FROM x\n');
});
