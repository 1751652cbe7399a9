// Phase timings for performance work, published on a diagnostics channel (as undici publishes its own
// events): domain code marks phases, and whoever subscribes decides what to do with them (the CLI and the
// daemon write them to stderr when STRATA_TRACE is set, see server/trace-log.ts). With no subscriber a
// phase costs one check.
import { channel } from 'node:diagnostics_channel';

export const PHASE_CHANNEL = 'strata:phase';

/** What a finished phase publishes. */
export interface PhaseMessage {
  phase: string;
  /** Wall-clock duration. */
  ms: number;
  /** Process CPU time used meanwhile (by everything in the process, not just this phase). */
  cpuMs: number;
  detail?: string;
}

const phases = channel(PHASE_CHANNEL);

/** Ends a phase; `detail` goes with its message. */
export type EndPhase = (detail?: string) => void;

const noop: EndPhase = () => {};

/** Starts timing `phase`; call the result when it is done. */
export function tracePhase(phase: string): EndPhase {
  if (!phases.hasSubscribers) return noop;
  const started = performance.now();
  const cpu = process.cpuUsage();
  return (detail) => {
    const used = process.cpuUsage(cpu);
    const message: PhaseMessage = {
      phase,
      ms: performance.now() - started,
      cpuMs: (used.user + used.system) / 1000,
      ...(detail ? { detail } : {}),
    };
    phases.publish(message);
  };
}
