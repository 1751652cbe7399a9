// How big the two reused buffers of a file download are (see FileRange.pump): 1 MiB each while few
// downloads run, smaller as more run at once, so that all of them together hold about `budget` bytes. With
// 200 clients each fetching a layer, 1 MiB buffers alone took the process past 300 MiB; a big single
// download still gets the large buffers that make it fast.
export const SEND_BUFFER_MAX = 1024 * 1024;
export const SEND_BUFFER_MIN = 64 * 1024;

export class SendBuffers {
  private readonly budget: number;
  private active = 0;

  /** `budget`: bytes of send buffers over all downloads at once (default 64 MiB). */
  constructor(budget = 64 * 1024 * 1024) {
    this.budget = budget;
  }

  /** A download starts: the buffer size it should use, and what to call when it ends. */
  enter(): { chunk: number; leave: () => void } {
    this.active++;
    let left = false;
    const share = Math.floor(this.budget / (2 * this.active) / SEND_BUFFER_MIN) * SEND_BUFFER_MIN;
    return {
      chunk: Math.min(SEND_BUFFER_MAX, Math.max(SEND_BUFFER_MIN, share)),
      leave: () => {
        if (left) return;
        left = true;
        this.active--;
      },
    };
  }

  get downloads(): number {
    return this.active;
  }
}
