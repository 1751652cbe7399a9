import assert from 'node:assert/strict';
import { test } from 'node:test';
import { BuildProgressTracker } from './build-progress.ts';

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
