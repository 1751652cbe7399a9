// The body of an apply worker (apply-workers.ts): applies one layer at a time with the applier's
// synchronous file-system calls, off the daemon's event loop. Callbacks the caller gave (skips, overlay
// whiteouts) and the layer's bytes, when they are not a file, travel as messages.
import { read } from 'node:fs';
import { Readable } from 'node:stream';
import { parentPort } from 'node:worker_threads';
import { fromWire, toWire } from '../thread-errors.ts';
import type { ApplyJob, FromWorker, ToWorker } from './apply-messages.ts';
import { applyInThread, type LayerSource } from './layer-applier.ts';

const port = parentPort;
if (!port) throw new Error('apply-worker.ts runs as a worker thread');

/** The job under way: where its stream bytes, abort and whiteout answers go. */
interface Current {
  stream?: Readable;
  /** Chunks pushed while the stream's buffer was full: acknowledged when it drains. */
  unacked: number;
  abort: AbortController;
  whiteouts: Map<number, { resolve(): void; reject(err: Error): void }>;
}
let current: Current | undefined;
let whiteoutIds = 0;

const post = (m: FromWorker) => port.postMessage(m);

function readAt(fd: number) {
  return {
    read: (buffer: Buffer, offset: number, length: number, position: number) =>
      new Promise<{ bytesRead: number }>((resolve, reject) =>
        read(fd, buffer, offset, length, position, (err, bytesRead) =>
          err ? reject(err) : resolve({ bytesRead }),
        ),
      ),
  };
}

async function run(job: ApplyJob): Promise<void> {
  const cur: Current = { unacked: 0, abort: new AbortController(), whiteouts: new Map() };
  let source: LayerSource;
  if (job.fd !== undefined) source = { file: readAt(job.fd) };
  else {
    const stream = new Readable({
      read() {
        for (; cur.unacked > 0; cur.unacked--) post({ type: 'ack' });
      },
    });
    cur.stream = stream;
    source = { stream };
  }
  current = cur;
  try {
    const result = await applyInThread(job.root, source, {
      signal: cur.abort.signal,
      onSkip: (kind, name) => post({ type: 'skip', kind, name }),
      ...job.options,
      ...(job.lowers && {
        overlay: {
          lowers: job.lowers,
          whiteout: (path: string) =>
            new Promise<void>((resolve, reject) => {
              const id = ++whiteoutIds;
              cur.whiteouts.set(id, { resolve, reject });
              post({ type: 'whiteout', id, path });
            }),
        },
      }),
    });
    post({ type: 'done', result });
  } catch (err) {
    post({ type: 'failed', error: toWire(err) });
  } finally {
    current = undefined;
    cur.stream?.destroy();
  }
}

port.on('message', (m: ToWorker) => {
  const cur = current;
  switch (m.type) {
    case 'apply':
      void run(m);
      return;
    case 'data': {
      if (!cur?.stream) return;
      const chunk = Buffer.from(m.chunk.buffer, m.chunk.byteOffset, m.chunk.byteLength);
      if (cur.stream.push(chunk)) post({ type: 'ack' });
      else cur.unacked++;
      return;
    }
    case 'end':
      cur?.stream?.push(null);
      return;
    case 'abort':
      cur?.abort.abort();
      return;
    case 'whiteout-done': {
      const w = cur?.whiteouts.get(m.id);
      if (!w) return;
      cur!.whiteouts.delete(m.id);
      if (m.error) w.reject(fromWire(m.error));
      else w.resolve();
      return;
    }
  }
});
