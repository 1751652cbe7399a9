import assert from 'node:assert/strict';
import { Writable } from 'node:stream';
import { test } from 'node:test';
import { screen } from '../../test/helpers/terminal-screen.ts';
import type { Descriptor } from '../oci/descriptor.ts';
import type { Digest } from '../oci/digest.ts';
import { createProgress, formatBytes, formatDuration, shortDigest } from './progress.ts';

class Capture extends Writable {
  text = '';
  override _write(chunk: Buffer, _enc: BufferEncoding, cb: () => void): void {
    this.text += chunk.toString('utf8');
    cb();
  }
}

const layer: Descriptor = {
  mediaType: 'application/vnd.oci.image.layer.v1.tar+gzip',
  digest: `sha256:${'ab'.repeat(32)}` as Digest,
  size: 45 * 1024 * 1024,
};

test('byte sizes, digests and durations as the lines print them', () => {
  assert.equal(formatBytes(0), '0 B');
  assert.equal(formatBytes(1023), '1023 B');
  assert.equal(formatBytes(1024), '1.0 KiB');
  assert.equal(formatBytes(12.34 * 1024 * 1024), '12.3 MiB');
  assert.equal(shortDigest(layer.digest), 'sha256:abababababab…');
  assert.equal(shortDigest('sha256:abc'), 'sha256:abc');
  assert.equal(formatDuration(250), '250ms');
  assert.equal(formatDuration(1234), '1.2s');
});

test('plain mode: a line per start, status lines only on the tick and only when bytes moved, a line when done', () => {
  const out = new Capture();
  // A long interval: the test drives the ticks through finish() instead of the clock.
  const p = createProgress(out, { tty: false, intervalMs: 3_600_000 });
  p.onEvent({ type: 'fetch-start', kind: 'layer', descriptor: layer, offset: 0 });
  for (let i = 1; i <= 20; i++)
    p.onEvent({ type: 'fetch-progress', descriptor: layer, bytes: i * 1024 * 1024 });
  assert.equal(
    out.text,
    `fetch layer sha256:abababababab… (45.0 MiB)\n`,
    'progress events alone print nothing',
  );
  p.onEvent({ type: 'fetch-done', kind: 'layer', descriptor: layer, ms: 1200, bytes: layer.size });
  p.onEvent({
    type: 'exists',
    kind: 'config',
    descriptor: { ...layer, digest: `sha256:${'cd'.repeat(32)}` as Digest },
  });
  p.onEvent({ type: 'unpack-done', layer, chainId: layer.digest, applied: true, ms: 300 });
  p.onEvent({ type: 'image', name: 'reg/x:1', target: layer, created: true });
  p.finish();
  assert.deepEqual(out.text.split('\n').slice(1), [
    'done sha256:abababababab… in 1.2s (45.0 MiB, 37.5 MiB/s)',
    'exists config sha256:cdcdcdcdcdcd…',
    'unpacked sha256:abababababab… in 300ms',
    'image reg/x:1 created',
    '',
  ]);
});

test('plain mode: an interrupted blob gets a last status line with its position', () => {
  const out = new Capture();
  const p = createProgress(out, { tty: false, intervalMs: 3_600_000 });
  p.onEvent({ type: 'fetch-start', kind: 'layer', descriptor: layer, offset: 5 * 1024 * 1024 });
  p.onEvent({ type: 'fetch-progress', descriptor: layer, bytes: 12.3 * 1024 * 1024 });
  p.finish();
  const lines = out.text.trim().split('\n');
  assert.equal(lines[0], 'fetch layer sha256:abababababab… (45.0 MiB, resuming at 5.0 MiB)');
  assert.match(lines[1]!, /^layer sha256:abababababab… 12\.3 MiB\/45\.0 MiB( \S+ \S+\/s)?$/);
  assert.equal(lines.length, 2);
  p.finish();
  assert.equal(out.text.trim().split('\n').length, 2, 'finish twice prints nothing more');
});

test('bar mode writes bars to the stream and stops cleanly', () => {
  const out = Object.assign(new Capture(), { isTTY: true, columns: 120 });
  const p = createProgress(out);
  p.onEvent({ type: 'fetch-start', kind: 'layer', descriptor: layer, offset: 0 });
  p.onEvent({ type: 'fetch-progress', descriptor: layer, bytes: 1024 * 1024 });
  p.onEvent({ type: 'fetch-done', kind: 'layer', descriptor: layer, ms: 1000, bytes: layer.size });
  p.finish();
  p.finish();
  assert.match(out.text, /sha256:abababababab…/);
  assert.match(out.text, /45\.0 MiB\/45\.0 MiB/);
  assert.match(out.text, /total/);
});

const layer2: Descriptor = { ...layer, digest: `sha256:${'ef'.repeat(32)}` as Digest, size: 3 * 1024 * 1024 };
const MiB = 1024 * 1024;

test('bar mode on an 80-column terminal: every bar whole on the last screen, the log lines above', (t) => {
  // The frames come from timers; the test moves the clock from frame to frame.
  t.mock.timers.enable({ apis: ['setTimeout', 'setInterval'] });
  const frame = () => t.mock.timers.tick(200);
  const out = Object.assign(new Capture(), { isTTY: true, columns: 80 });
  const p = createProgress(out, { env: {} });
  p.onEvent({ type: 'fetch-start', kind: 'layer', descriptor: layer, offset: 0 });
  p.onEvent({ type: 'fetch-start', kind: 'layer', descriptor: layer2, offset: 0 });
  p.onEvent({ type: 'fetch-progress', descriptor: layer2, bytes: MiB });
  frame();
  p.onEvent({ type: 'fetch-done', kind: 'layer', descriptor: layer2, ms: 500, bytes: layer2.size });
  p.onEvent({
    type: 'exists',
    kind: 'layer',
    descriptor: { ...layer, digest: `sha256:${'cd'.repeat(32)}` as Digest },
  });
  p.onEvent({ type: 'fetch-done', kind: 'layer', descriptor: layer, ms: 1500, bytes: layer.size });
  frame();
  // Two lines in one frame, over bars that did not change since the last.
  p.onEvent({ type: 'unpack-done', layer, chainId: layer.digest, applied: true, ms: 300 });
  p.onEvent({ type: 'unpack-done', layer: layer2, chainId: layer2.digest, applied: true, ms: 200 });
  frame();
  // A line between the last frame and the end is shown too.
  const chainId = `sha256:${'12'.repeat(32)}` as Digest;
  p.onEvent({ type: 'unpack-done', layer: layer2, chainId, applied: false, ms: 1 });
  p.finish();
  const shown = screen(out.text, 80);
  assert.deepEqual(shown.slice(0, 4), [
    'exists sha256:cdcdcdcdcdcd…',
    'unpacked sha256:abababababab… in 300ms',
    'unpacked sha256:efefefefefef… in 200ms',
    'snapshot sha256:121212121212… exists',
  ]);
  assert.equal(shown.length, 7, shown.join('\n'));
  assert.match(shown[4]!, /^total +\[█+\] 48\.0 MiB\/48\.0 MiB \d+(\.\d)? \S+\/s$/);
  assert.match(shown[5]!, /^sha256:abababababab… +\[█+\] 45\.0 MiB\/45\.0 MiB done in 1\.5s$/);
  assert.match(shown[6]!, /^sha256:efefefefefef… +\[█+\] 3\.0 MiB\/3\.0 MiB done in 500ms$/);
});

test('bars only where they fit: plain lines on a dumb or narrow terminal', () => {
  for (const [env, columns] of [
    [{ TERM: 'dumb' }, 120],
    [{}, 40],
  ] as const) {
    const out = Object.assign(new Capture(), { isTTY: true, columns });
    const p = createProgress(out, { env });
    p.onEvent({ type: 'fetch-start', kind: 'layer', descriptor: layer, offset: 0 });
    p.onEvent({ type: 'fetch-done', kind: 'layer', descriptor: layer, ms: 1000, bytes: layer.size });
    p.finish();
    assert.doesNotMatch(
      out.text,
      /\x1b|\r/,
      `no control sequences with TERM=${env.TERM} on ${columns} columns`,
    );
    assert.match(out.text, /^fetch layer sha256:abababababab… \(45\.0 MiB\)\ndone /);
  }
});

test('bar mode: a blob fetched again from 0 after a resumed attempt keeps one bar, and the total counts each byte fetched once', () => {
  const out = Object.assign(new Capture(), { isTTY: true, columns: 80 });
  const p = createProgress(out, { env: {} });
  p.onEvent({ type: 'fetch-start', kind: 'layer', descriptor: layer, offset: 40 * MiB });
  p.onEvent({ type: 'fetch-progress', descriptor: layer, bytes: 45 * MiB });
  // The daemon refused the resumed bytes: the whole blob again, from 0.
  p.onEvent({ type: 'fetch-start', kind: 'layer', descriptor: layer, offset: 0 });
  p.onEvent({ type: 'fetch-progress', descriptor: layer, bytes: 10 * MiB });
  p.onEvent({ type: 'fetch-done', kind: 'layer', descriptor: layer, ms: 1000, bytes: 50 * MiB });
  p.finish();
  const shown = screen(out.text, 80);
  assert.equal(shown.length, 2, shown.join('\n'));
  assert.match(shown[0]!, /^total +\[█+\] 50\.0 MiB\/50\.0 MiB /);
  assert.match(shown[1]!, /^sha256:abababababab… +\[█+\] 45\.0 MiB\/45\.0 MiB done in 1\.0s$/);
});
