import assert from 'node:assert/strict';
import { Writable } from 'node:stream';
import { test } from 'node:test';
import { pino } from 'pino';
import { Registry } from 'prom-client';
import { unavailable } from '../errors.ts';
import { FacadeMetrics } from '../facade/http/metrics.ts';
import type { PrefetchSummary } from '../facade/prefetch.ts';
import { prefetchLog } from './prefetch-log.ts';

function capture() {
  const lines: Array<{ level: number; msg: string; id?: string }> = [];
  const sink = new Writable({
    write(chunk: Buffer, _enc, done) {
      for (const l of chunk.toString().split('\n').filter(Boolean)) lines.push(JSON.parse(l));
      done();
    },
  });
  const events = prefetchLog(new FacadeMetrics(new Registry(), () => 0), pino({ level: 'debug' }, sink));
  const warnings = () => lines.filter((l) => l.level === 40).map((l) => l.id);
  return { events, warnings };
}

const summary = (attempt: number): PrefetchSummary => ({
  blobs: 1,
  outcomes: {},
  bytes: 0,
  failedBlobs: 1,
  durationMs: 1,
  attempt,
});

test('an outage failing every spec warns once, not once per spec or attempt; the next outage warns again', async () => {
  const { events, warnings } = capture();
  const down = unavailable('registry unreachable');
  for (const id of ['a', 'b', 'c']) events.failed?.(id, down, summary(1), 2000);
  for (const id of ['a', 'b', 'c']) events.failed?.(id, down, summary(2), 4000);
  assert.deepEqual(warnings(), ['a']);
  for (const id of ['a', 'b']) events.completed?.(id, summary(3));
  events.cancelled?.('c', summary(3), new Error('removed'));
  events.failed?.('b', down, summary(1), 2000);
  assert.deepEqual(warnings(), ['a', 'b']);
  // Giving up always warns.
  events.failed?.('d', new Error('denied'), summary(4));
  assert.deepEqual(warnings(), ['a', 'b', 'd']);
});
