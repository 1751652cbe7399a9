// Graceful shutdown of the facade's HTTP surface. Once draining starts, readiness reports false (so the
// node's load balancer or kubelet stops sending work), new requests are answered 503 with
// `Connection: close` while the listener stays open (a refused connection reads as a dead registry, a 503
// as "try again"), and the requests already in flight (a workspace's layer download) get until the
// deadline to finish. Health and metrics are still answered while draining.

const MAX_TIMER_MS = 2 ** 31 - 1;

export class Drain {
  private active = 0;
  private started = false;
  private wake: (() => void) | undefined;

  get draining(): boolean {
    return this.started;
  }

  get inFlight(): number {
    return this.active;
  }

  /** Counts a request in; the returned function counts it out (call it once, when the answer is over). */
  enter(): () => void {
    this.active++;
    let left = false;
    return () => {
      if (left) return;
      left = true;
      this.active--;
      if (this.active === 0) this.wake?.();
    };
  }

  /**
   * Starts draining; resolves once no request is in flight, or at the deadline with the number of requests
   * still running (which the caller then cuts).
   */
  async drain(deadlineMs: number): Promise<number> {
    this.started = true;
    if (this.active === 0) return 0;
    await new Promise<void>((resolve) => {
      // Node fires a timer longer than 2^31-1 ms at once: a very long deadline is the longest it holds.
      const timer = setTimeout(resolve, Math.min(deadlineMs, MAX_TIMER_MS));
      this.wake = () => {
        clearTimeout(timer);
        resolve();
      };
    });
    this.wake = undefined;
    return this.active;
  }
}
