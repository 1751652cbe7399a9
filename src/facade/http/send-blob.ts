// A blob's GET/HEAD answer, the same for composed (server.ts) and hosted (hosted.ts) repositories. A
// stream that fails after the headers went out destroys the connection, so a client never sees a complete
// response with wrong bytes.
import { once } from 'node:events';
import type { IncomingMessage, ServerResponse } from 'node:http';
import { pipeline } from 'node:stream';
import type { Logger } from 'pino';
import { FileRange } from '../../content/file-range.ts';
import { GrowthRange } from '../../content/follow.ts';
import { errorKind, messageOf } from '../../errors.ts';
import type { ServedBlob } from '../service.ts';
import type { FacadeMetrics } from './metrics.ts';
import { noneMatchHits, parseRange } from './negotiate.ts';
import { OciHttpError } from './oci-errors.ts';
import type { RequestLog } from './request-log.ts';
import { pumpFile, SendBuffers } from './send-buffers.ts';

/** One budget for the process: memory is the process's, however many servers it runs. */
const sendBuffers = new SendBuffers();

export interface BlobSendOptions {
  metrics: FacadeMetrics;
  logger: Logger;
}

/** Answers GET/HEAD of a blob: headers, a redirect, or the bytes (whole or one range), streamed. */
export async function sendBlob(
  o: BlobSendOptions,
  req: IncomingMessage,
  res: ServerResponse,
  blob: ServedBlob,
  signal: AbortSignal,
  log: RequestLog,
): Promise<void> {
  const digest = blob.descriptor.digest;
  log.source = blob.source;
  const size = blob.descriptor.size;
  const common = {
    'docker-content-digest': digest,
    etag: `"${digest}"`,
    'accept-ranges': 'bytes',
  };
  // A blob's bytes never change under its digest: a client holding them is told so (as Go's ServeContent
  // tells docker-registry's clients).
  if (noneMatchHits(req.headers['if-none-match'], digest)) {
    res.writeHead(304, common);
    res.end();
    return;
  }
  if (req.method === 'HEAD') {
    o.metrics.blobServed(blob.source, 'head');
    res.writeHead(200, { ...common, 'content-type': 'application/octet-stream', 'content-length': size });
    res.end();
    return;
  }
  if (blob.kind === 'redirect') {
    o.metrics.blobServed(blob.source, 'redirect');
    res.writeHead(307, { 'docker-content-digest': digest, location: blob.url, 'content-length': 0 });
    res.end();
    return;
  }
  const range = parseRange(firstHeader(req.headers.range), size);
  if (range.kind === 'unsatisfiable') {
    res.setHeader('content-range', `bytes */${size}`);
    throw new OciHttpError(
      416,
      'RANGE_INVALID',
      `range ${req.headers.range} is outside the blob's ${size} bytes`,
    );
  }
  const part = range.kind === 'partial' ? { offset: range.offset, length: range.length } : undefined;
  const stream = await blob.blob.open({ range: part, signal });
  const headers: Record<string, string | number> = { ...common, 'content-type': 'application/octet-stream' };
  const expected = part ? part.length : size;
  if (part) headers['content-range'] = `bytes ${part.offset}-${part.offset + part.length - 1}/${size}`;
  headers['content-length'] = expected;
  const status = part ? 206 : 200;
  if (stream instanceof FileRange || stream instanceof GrowthRange) {
    // A file on this machine, complete or still being filled: two buffers reused for the whole download
    // (and by later downloads), reads overlapping writes, sized so all downloads at once stay within a
    // memory budget. The status goes out with the first bytes read; a failure before them is the answer.
    const lease = sendBuffers.enter();
    let started = false;
    let sent = false;
    try {
      await pumpFile(await stream.open(), stream.path, stream, lease, async (chunk) => {
        if (!started) {
          started = true;
          res.writeHead(status, headers);
        }
        await writeChunk(res, chunk, signal);
        log.bytes += chunk.length;
      });
      if (!started) res.writeHead(status, headers);
      res.end();
      sent = true;
    } catch (err) {
      logIfCorrupt(o.logger, digest, err);
      if (!started) throw err;
      log.error = messageOf(err);
      res.destroy();
    } finally {
      // A failed download's last write may still hold a buffer: those are not reused.
      lease.leave(sent);
      stream.destroy();
      o.metrics.bytesServed.inc({ source: blob.source }, log.bytes);
    }
    return;
  }
  // Wait for the first bytes (or the first failure) before committing to a status. once() takes its
  // 'readable' listener off again, so the stream flows as usual when piped below.
  try {
    await once(stream, 'readable');
  } catch (err) {
    stream.destroy();
    throw err;
  }
  res.writeHead(status, headers);
  stream.on('data', (chunk: Buffer) => {
    log.bytes += chunk.length;
  });
  // The stream goes to the socket as it is: no wrapper per chunk on the hot path.
  await new Promise<void>((resolve) => {
    pipeline(stream, res, (err) => {
      o.metrics.bytesServed.inc({ source: blob.source }, log.bytes);
      if (err || log.bytes !== expected) {
        // The client must not take what it got for the whole blob.
        log.error = err ? messageOf(err) : `stream ended after ${log.bytes} of ${expected} bytes`;
        logIfCorrupt(o.logger, digest, err);
        res.destroy();
      }
      resolve();
    });
  });
}

function logIfCorrupt(logger: Logger, digest: string, err: unknown): void {
  if (errorKind(err) === 'DataLoss')
    logger.error({ digest, err: messageOf(err) }, 'blob failed verification');
}

/** Writes one chunk; resolves once the socket has taken it (the buffer may then be reused). */
function writeChunk(res: ServerResponse, chunk: Buffer, signal: AbortSignal): Promise<void> {
  return new Promise((resolve, reject) => {
    if (signal.aborted) {
      reject(signal.reason);
      return;
    }
    const onAbort = () => reject(signal.reason);
    signal.addEventListener('abort', onAbort, { once: true });
    res.write(chunk, (err) => {
      signal.removeEventListener('abort', onAbort);
      if (err) reject(err);
      else resolve();
    });
  });
}

function firstHeader(v: string | string[] | undefined): string | undefined {
  return Array.isArray(v) ? v[0] : v;
}
