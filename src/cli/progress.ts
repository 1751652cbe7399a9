// Pull progress for people: on a terminal wide enough, a bar per blob being fetched (bytes done/total and
// rate) and a total bar; otherwise (a pipe, a file, TERM=dumb, a narrow terminal) plain lines, a status
// line per active blob at most once per interval plus a line when each blob is done, so logs stay
// readable and small.
import type { Writable } from 'node:stream';
import { MultiBar, Presets, type SingleBar } from 'cli-progress';
import type { BlobKind, PullEvent } from '../client/pull/events.ts';

export interface ProgressDisplay {
  onEvent(event: PullEvent): void;
  /** Stops timers and bars; prints nothing more. */
  finish(): void;
}

export interface ProgressOptions {
  /** Bars (true) or plain lines (false); default: whether `out` is a terminal. */
  tty?: boolean;
  /** Plain mode: status lines for active blobs at most this often (default 1000 ms). */
  intervalMs?: number;
  /** Where TERM is read (default process.env): a dumb terminal gets plain lines. */
  env?: Readonly<Record<string, string | undefined>>;
}

const UNITS = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];

/** `12.3 MiB`: binary units, one decimal past bytes. */
export function formatBytes(n: number): string {
  let v = n;
  let u = 0;
  while (v >= 1024 && u < UNITS.length - 1) {
    v /= 1024;
    u++;
  }
  return u === 0 ? `${v} B` : `${v.toFixed(1)} ${UNITS[u]}`;
}

/** `sha256:0123456789ab…`: enough of a digest to tell blobs apart. */
export function shortDigest(d: string): string {
  const i = d.indexOf(':');
  return d.length > i + 13 ? `${d.slice(0, i + 13)}…` : d;
}

export function formatDuration(ms: number): string {
  return ms < 1000 ? `${Math.round(ms)}ms` : `${(ms / 1000).toFixed(1)}s`;
}

const rate = (bytes: number, ms: number): string => (ms > 0 ? `${formatBytes((bytes * 1000) / ms)}/s` : '');

interface Active {
  kind: BlobKind;
  size: number;
  start: number;
  startOffset: number;
  bytes: number;
  printed: number;
  bar?: SingleBar;
}

/** A bar line: label, bar, `1023.9 MiB/1023.9 MiB` and the rate or `done in 59.9s`, with spaces. */
const LABEL_WIDTH = 20;
const FIGURES_WIDTH = 1 + 2 + 1 + 21 + 1 + 13;
const MAX_BAR = 30;
const MIN_BAR = 10;

export function createProgress(
  out: Writable & { isTTY?: boolean; columns?: number },
  opts: ProgressOptions = {},
): ProgressDisplay {
  const env = opts.env ?? process.env;
  // The last column is left free: a character there makes some terminals wrap.
  const room = out.isTTY === true && out.columns ? out.columns - 1 - LABEL_WIDTH - FIGURES_WIDTH : MAX_BAR;
  const barSize = Math.min(MAX_BAR, room);
  const bars = opts.tty ?? (out.isTTY === true && env.TERM !== 'dumb' && barSize >= MIN_BAR);
  return bars
    ? new BarsDisplay(out, Math.max(MIN_BAR, barSize))
    : new PlainDisplay(out, opts.intervalMs ?? 1000);
}

class PlainDisplay implements ProgressDisplay {
  private readonly out: Writable;
  private readonly active = new Map<string, Active>();
  private readonly timer: NodeJS.Timeout;

  constructor(out: Writable, intervalMs: number) {
    this.out = out;
    this.timer = setInterval(() => this.tick(), intervalMs);
    this.timer.unref();
  }

  private line(s: string): void {
    this.out.write(`${s}\n`);
  }

  private tick(): void {
    for (const [digest, a] of this.active) {
      if (a.bytes === a.printed) continue;
      a.printed = a.bytes;
      const r = rate(a.bytes - a.startOffset, performance.now() - a.start);
      this.line(
        `${a.kind} ${shortDigest(digest)} ${formatBytes(a.bytes)}/${formatBytes(a.size)}${r ? ` ${r}` : ''}`,
      );
    }
  }

  onEvent(e: PullEvent): void {
    switch (e.type) {
      case 'resolved':
        this.line(`resolved ${e.name} ${e.descriptor.digest}`);
        break;
      case 'fetch-start': {
        const d = e.descriptor;
        this.active.set(d.digest, {
          kind: e.kind,
          size: d.size,
          start: performance.now(),
          startOffset: e.offset,
          bytes: e.offset,
          printed: e.offset,
        });
        const from = e.offset > 0 ? `, resuming at ${formatBytes(e.offset)}` : '';
        this.line(`fetch ${e.kind} ${shortDigest(d.digest)} (${formatBytes(d.size)}${from})`);
        break;
      }
      case 'fetch-progress': {
        const a = this.active.get(e.descriptor.digest);
        if (a) a.bytes = e.bytes;
        break;
      }
      case 'fetch-done':
        this.active.delete(e.descriptor.digest);
        this.line(
          `done ${shortDigest(e.descriptor.digest)} in ${formatDuration(e.ms)} (${formatBytes(e.bytes)}${
            e.bytes > 0 ? `, ${rate(e.bytes, e.ms)}` : ''
          })`,
        );
        break;
      case 'exists':
        this.line(`exists ${e.kind} ${shortDigest(e.descriptor.digest)}`);
        break;
      case 'unpack-start':
        break;
      case 'unpack-done':
        this.line(
          e.applied
            ? `unpacked ${shortDigest(e.layer.digest)} in ${formatDuration(e.ms)}`
            : `snapshot ${shortDigest(e.chainId)} exists`,
        );
        break;
      case 'image':
        this.line(`image ${e.name} ${e.created ? 'created' : 'updated'}`);
        break;
    }
  }

  finish(): void {
    clearInterval(this.timer);
    // A last status line for what is still running (a failed pull), then nothing more.
    this.tick();
    this.active.clear();
  }
}

class BarsDisplay implements ProgressDisplay {
  private readonly bars: MultiBar;
  private readonly total: SingleBar;
  private readonly active = new Map<string, Active>();
  private totalBytes = 0;
  private doneBytes = 0;
  private readonly start = performance.now();
  private readonly timer: NodeJS.Timeout;
  private finished = false;

  constructor(out: Writable, barSize: number) {
    this.bars = new MultiBar(
      {
        stream: out,
        format: '{label} [{bar}] {done}/{size} {rate}',
        hideCursor: true,
        clearOnComplete: false,
        barsize: barSize,
        fps: 8,
        autopadding: true,
        // Every bar on every frame: the library skips a bar whose text did not change, but a log line
        // printed above the bars has moved them all down a line, so a skipped bar would be lost.
        forceRedraw: true,
      },
      Presets.shades_classic,
    );
    this.total = this.bars.create(1, 0, this.payload('total', 0, 0, ''));
    // Rates fall when nothing arrives; refresh them even without events.
    this.timer = setInterval(() => this.refresh(), 500);
    this.timer.unref();
  }

  private payload(label: string, done: number, size: number, r: string) {
    return { label: label.padEnd(LABEL_WIDTH), done: formatBytes(done), size: formatBytes(size), rate: r };
  }

  private refresh(): void {
    const now = performance.now();
    let current = this.doneBytes;
    for (const [digest, a] of this.active) {
      current += a.bytes - a.startOffset;
      a.bar?.update(
        a.bytes,
        this.payload(shortDigest(digest), a.bytes, a.size, rate(a.bytes - a.startOffset, now - a.start)),
      );
    }
    this.total.setTotal(Math.max(1, this.totalBytes));
    this.total.update(
      current,
      this.payload('total', current, this.totalBytes, rate(current, now - this.start)),
    );
  }

  onEvent(e: PullEvent): void {
    switch (e.type) {
      case 'fetch-start': {
        const d = e.descriptor;
        // Fetched again from the start (the daemon refused a resumed ingest's bytes): the attempt given
        // up counts for what it moved, and its bar goes on from the new position.
        const before = this.active.get(d.digest);
        if (before) this.totalBytes -= before.size - before.bytes;
        this.totalBytes += d.size - e.offset;
        const a: Active = {
          kind: e.kind,
          size: d.size,
          start: performance.now(),
          startOffset: e.offset,
          bytes: e.offset,
          printed: 0,
        };
        if (before?.bar) {
          a.bar = before.bar;
          a.bar.update(e.offset, this.payload(shortDigest(d.digest), e.offset, d.size, ''));
        } else if (e.kind === 'layer') {
          a.bar = this.bars.create(
            Math.max(1, d.size),
            e.offset,
            this.payload(shortDigest(d.digest), e.offset, d.size, ''),
          );
        }
        this.active.set(d.digest, a);
        break;
      }
      case 'fetch-progress': {
        const a = this.active.get(e.descriptor.digest);
        if (a) a.bytes = e.bytes;
        break;
      }
      case 'fetch-done': {
        const a = this.active.get(e.descriptor.digest);
        this.active.delete(e.descriptor.digest);
        this.doneBytes += e.bytes;
        if (a?.bar)
          a.bar.update(
            a.size,
            this.payload(shortDigest(e.descriptor.digest), a.size, a.size, `done in ${formatDuration(e.ms)}`),
          );
        this.refresh();
        break;
      }
      case 'exists':
        if (e.kind === 'layer') this.log(`exists ${shortDigest(e.descriptor.digest)}`);
        break;
      case 'unpack-done':
        this.log(
          e.applied
            ? `unpacked ${shortDigest(e.layer.digest)} in ${formatDuration(e.ms)}`
            : `snapshot ${shortDigest(e.chainId)} exists`,
        );
        break;
      default:
        break;
    }
  }

  /**
   * A line above the bars, printed with the next frame. The library writes queued lines over the bars'
   * old lines without erasing them, so each erases its line first.
   */
  private log(line: string): void {
    this.bars.log(`\x1b[2K${line}\n`);
  }

  finish(): void {
    if (this.finished) return;
    this.finished = true;
    clearInterval(this.timer);
    this.refresh();
    // One last frame: stop() draws the bars but drops lines still queued for the next frame.
    this.bars.update();
    this.bars.stop();
  }
}
