// Spreads a burst of unary calls over event-loop turns. Node's HTTP/2 session writes what the calls of
// one turn answered only once the turn ends, so a client with many calls in flight, all read from one
// socket read, got every answer at once, after all of them had run, and sat idle meanwhile (as the
// server did while the client worked through the answers). Running a few calls per turn lets answers
// leave while the next calls run, so client and server overlap on two cores.
const CALLS_PER_TURN = 4;

/** The turn scheduler of one server: created with it, stopped with it. */
export class CallTurns {
  readonly #queue: Array<() => void> = [];
  #ranThisTurn = 0;
  #scheduled: NodeJS.Immediate | undefined;
  #stopped = false;

  /** Runs `fn` now if this turn has room, else in a later turn, in arrival order. */
  run(fn: () => void): void {
    if (this.#stopped) return;
    this.#schedule();
    if (this.#ranThisTurn < CALLS_PER_TURN && this.#queue.length === 0) {
      this.#ranThisTurn++;
      fn();
    } else {
      this.#queue.push(fn);
    }
  }

  /** Drops calls still waiting (their streams are gone with the server) and the pending turn. */
  stop(): void {
    this.#stopped = true;
    this.#queue.length = 0;
    if (this.#scheduled) clearImmediate(this.#scheduled);
    this.#scheduled = undefined;
  }

  #nextTurn = (): void => {
    this.#scheduled = undefined;
    this.#ranThisTurn = 0;
    while (this.#queue.length > 0 && this.#ranThisTurn < CALLS_PER_TURN) {
      this.#ranThisTurn++;
      this.#queue.shift()?.();
    }
    // Also after a turn that ran calls, so the count starts again from zero.
    if (this.#ranThisTurn > 0) this.#schedule();
  };

  #schedule(): void {
    if (this.#scheduled) return;
    // setImmediate runs after the session's own write (a native immediate queued before it).
    this.#scheduled = setImmediate(this.#nextTurn);
  }
}
