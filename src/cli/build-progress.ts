// Build progress state for the terminal bar: the phase from the build stream and the current step from
// buildah's `STEP n/m: …` log lines (multi-stage builds prefix them with `[stage/stages] `). Log chunks may
// cut a line anywhere, so a partial line is held until its newline arrives.
import type { Writable } from 'node:stream';
import { MultiBar, Presets } from 'cli-progress';
import { formatDuration } from './progress.ts';

export interface BuildProgressState {
  phase: string;
  step: number;
  steps: number;
  /** The current step's instruction, e.g. `RUN make`. */
  current: string;
}

const STEP = /^(?:\[\d+\/\d+\] )?STEP (\d+)\/(\d+): (.*)$/;

export class BuildProgressTracker {
  readonly state: BuildProgressState = { phase: 'queued', step: 0, steps: 0, current: '' };
  private partial = '';

  setPhase(phase: string): void {
    this.state.phase = phase;
  }

  /** Feeds a chunk of the build log; updates the step from each complete line. */
  onLog(chunk: string): void {
    const lines = (this.partial + chunk).split('\n');
    this.partial = lines.pop() ?? '';
    for (const line of lines) {
      const m = STEP.exec(line.replace(/\r$/, ''));
      if (!m) continue;
      this.state.step = Number(m[1]);
      this.state.steps = Number(m[2]);
      this.state.current = m[3] ?? '';
    }
  }
}

/** Where `strata build` writes: status lines, log chunks, and the end. */
export interface BuildOutput {
  status(phase: string, line: string): void;
  log(chunk: Uint8Array): void;
  finish(): void;
}

type Stream = Writable & { isTTY?: boolean };

/**
 * On a terminal (both streams, TERM not dumb), one bar (the step of buildah's STEP n/m lines, the phase,
 * elapsed time) with status and log lines printed above it; otherwise status lines to `err` and the log
 * to `out`. `env` is where TERM is read (default process.env).
 */
export function buildOutput(
  out: Stream,
  err: Stream,
  opts: { tty?: boolean; env?: Readonly<Record<string, string | undefined>> } = {},
): BuildOutput {
  const dumb = (opts.env ?? process.env).TERM === 'dumb';
  if (!(opts.tty ?? (out.isTTY === true && err.isTTY === true && !dumb))) {
    return { status: (_p, line) => err.write(`${line}\n`), log: (c) => out.write(c), finish() {} };
  }
  const tracker = new BuildProgressTracker();
  const started = Date.now();
  const bars = new MultiBar(
    {
      stream: err,
      format: '{phase} [{bar}] step {step}/{steps} {elapsed} {current}',
      barsize: 30,
      hideCursor: true,
      clearOnComplete: true,
      noTTYOutput: opts.tty === true,
      // The log lines above the bar wrap as the terminal wraps them (the library would turn wrapping off
      // and cut each at the right edge); the bar itself is cut to the terminal's width either way.
      linewrap: true,
    },
    Presets.shades_classic,
  );
  const bar = bars.create(1, 0);
  const redraw = () => {
    const s = tracker.state;
    bar.setTotal(Math.max(s.steps, 1));
    bar.update(s.step, {
      phase: s.phase,
      step: s.step,
      steps: s.steps || '?',
      current: s.current.length > 48 ? `${s.current.slice(0, 47)}…` : s.current,
      elapsed: formatDuration(Date.now() - started),
    });
  };
  const timer = setInterval(redraw, 1000);
  timer.unref();
  // MultiBar.log prints whole lines above the bar; a partial line waits for its newline.
  let partial = '';
  const utf8 = new TextDecoder();
  redraw();
  return {
    status(phase, line) {
      tracker.setPhase(phase);
      bars.log(`${line}\n`);
      redraw();
    },
    log(chunk) {
      const decoded = utf8.decode(chunk, { stream: true });
      tracker.onLog(decoded);
      const text = partial + decoded;
      const end = text.lastIndexOf('\n');
      partial = text.slice(end + 1);
      if (end >= 0) bars.log(text.slice(0, end + 1));
      redraw();
    },
    finish() {
      clearInterval(timer);
      if (partial) bars.log(`${partial}\n`);
      partial = '';
      // Lines logged since the last frame are printed by the next one: draw it before the bar goes.
      bars.update();
      bars.stop();
    },
  };
}
