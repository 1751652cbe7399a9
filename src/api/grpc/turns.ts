// Spreads a burst of unary calls over event-loop turns. Node's HTTP/2 session writes what the calls of
// one turn answered only once the turn ends, so a client with many calls in flight, all read from one
// socket read, got every answer at once, after all of them had run, and sat idle meanwhile (as the
// server did while the client worked through the answers). Running a few calls per turn lets answers
// leave while the next calls run, so client and server overlap on two cores.
const CALLS_PER_TURN = 4;

const queue: Array<() => void> = [];
let ranThisTurn = 0;
let scheduled = false;

function nextTurn(): void {
  scheduled = false;
  ranThisTurn = 0;
  while (queue.length > 0 && ranThisTurn < CALLS_PER_TURN) {
    ranThisTurn++;
    queue.shift()?.();
  }
  // Also after a turn that ran calls, so the count starts again from zero.
  if (ranThisTurn > 0) schedule();
}

function schedule(): void {
  if (scheduled) return;
  scheduled = true;
  // setImmediate runs after the session's own write (a native immediate queued before it).
  setImmediate(nextTurn);
}

/** Runs `fn` now if this turn has room, else in a later turn, in arrival order. */
export function runInTurn(fn: () => void): void {
  schedule();
  if (ranThisTurn < CALLS_PER_TURN && queue.length === 0) {
    ranThisTurn++;
    fn();
  } else {
    queue.push(fn);
  }
}
