// The body of the copy worker (copy-runner.ts): copies one parent tree per message with synchronous
// file-system calls, off the daemon's event loop. An abort arrives as a flag in shared memory, since the
// walk does not return to the event loop until it is done.
import { parentPort } from 'node:worker_threads';
import { toWire } from '../thread-errors.ts';
import type { CopyAnswer, CopyJob } from './copy-messages.ts';
import { copyTreeInThread } from './tree-copier.ts';

const port = parentPort;
if (!port) throw new Error('copy-worker.ts runs as a worker thread');

port.on('message', (job: CopyJob) => {
  const flag = new Int32Array(job.abort);
  let answer: CopyAnswer;
  try {
    answer = {
      id: job.id,
      result: copyTreeInThread(job.src, job.dst, job.chown, () => Atomics.load(flag, 0) === 1),
    };
  } catch (err) {
    answer = { id: job.id, error: toWire(err) };
  }
  port.postMessage(answer);
});
