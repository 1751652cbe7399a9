// Build progress state for the terminal bar: the phase from the build stream and the current step from
// buildah's `STEP n/m: …` log lines (multi-stage builds prefix them with `[stage/stages] `). Log chunks may
// cut a line anywhere, so a partial line is held until its newline arrives.

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
