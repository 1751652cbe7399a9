// Phase timings for performance work: with STRATA_TRACE set (to anything but '' or 0), each finished
// phase is written to stderr as one line:
//   strata-trace <end: wall-clock ms mod 10^6> <pid> <phase> <ms> cpu=<process CPU ms meanwhile> [detail]
// Off, a phase costs one branch. Client and daemon both use it, so their lines can be laid side by side.

const enabled = ((v) => v !== undefined && v !== '' && v !== '0')(process.env.STRATA_TRACE);

/** Ends a phase; `detail` is appended to its line. */
export type EndPhase = (detail?: string) => void;

const noop: EndPhase = () => {};

export function tracing(): boolean {
  return enabled;
}

/** Starts timing `phase`; call the result when it is done. */
export function tracePhase(phase: string): EndPhase {
  if (!enabled) return noop;
  const started = performance.now();
  const cpu = process.cpuUsage();
  return (detail) => {
    const ms = (performance.now() - started).toFixed(1);
    const used = process.cpuUsage(cpu);
    const cpuMs = ((used.user + used.system) / 1000).toFixed(0);
    const at = Date.now() % 1_000_000;
    process.stderr.write(
      `strata-trace ${at} ${process.pid} ${phase} ${ms} cpu=${cpuMs}${detail ? ` ${detail}` : ''}\n`,
    );
  };
}
