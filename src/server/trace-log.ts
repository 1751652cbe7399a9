// Writes each phase published on the trace channel to stderr as one line, when STRATA_TRACE is set (to
// anything but '' or 0):
//   strata-trace <end: wall-clock ms mod 10^6> <pid> <phase> <ms> cpu=<process CPU ms meanwhile> [detail]
// The pull client and the daemon both write them, so their lines can be laid side by side.
import { subscribe, unsubscribe } from 'node:diagnostics_channel';
import { PHASE_CHANNEL, type PhaseMessage } from '../trace.ts';

function writeLine(message: unknown): void {
  const { phase, ms, cpuMs, detail } = message as PhaseMessage;
  const at = Date.now() % 1_000_000;
  const tail = detail ? ` ${detail}` : '';
  process.stderr.write(
    `strata-trace ${at} ${process.pid} ${phase} ${ms.toFixed(1)} cpu=${cpuMs.toFixed(0)}${tail}\n`,
  );
}

/** Writes trace lines to stderr from now on if `env` asks for them (once, however often called). */
export function traceToStderr(env: NodeJS.ProcessEnv = process.env): void {
  const v = env.STRATA_TRACE;
  if (v === undefined || v === '' || v === '0') return;
  unsubscribe(PHASE_CHANNEL, writeLine);
  subscribe(PHASE_CHANNEL, writeLine);
}
