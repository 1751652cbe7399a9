// Ctrl-C (SIGINT) or SIGTERM during a long command: its work is aborted through a signal, and the command
// ends with status 130 (128 + SIGINT), as a shell reports a command a signal stopped.
let interrupted = false;

/** Whether the command was interrupted (the exit status is then 130). */
export function wasInterrupted(): boolean {
  return interrupted;
}

/** A signal aborted (reason: "interrupted") at SIGINT or SIGTERM until `dispose`. */
export function interruptSignal(): { signal: AbortSignal; dispose(): void } {
  const stop = new AbortController();
  const on = () => {
    interrupted = true;
    stop.abort(new Error('interrupted'));
  };
  process.once('SIGINT', on);
  process.once('SIGTERM', on);
  return {
    signal: stop.signal,
    dispose() {
      process.off('SIGINT', on);
      process.off('SIGTERM', on);
    },
  };
}
