// A pass-through HTTP proxy on loopback in front of a registry that records every request, so tests can
// observe on the wire what a client downloaded (the registry cannot tell us).
import http from 'node:http';
import type { AddressInfo } from 'node:net';

export interface Seen {
  method: string;
  path: string;
  range?: string;
}

/**
 * A pass-through HTTP proxy on loopback in front of the registry, recording every request. With `lieAbout`
 * it serves that blob with one byte changed (same length): content a real registry cannot be made to send.
 * With `bytesPerSecond` answers are slowed to about that rate (so a registry can be stopped mid-blob). An
 * answer the registry breaks off is broken off to the client too. A request `fail` picks (it sees what was
 * seen before) is answered 500 without reaching the registry, as docker-registry answers a read of a tag
 * being pushed at that moment.
 */
export async function countingProxy(
  upstream: string,
  opts: {
    lieAbout?: string;
    bytesPerSecond?: number;
    fail?: (req: Seen, before: readonly Seen[]) => boolean;
  } = {},
): Promise<{ host: string; seen: Seen[]; close(): Promise<void> }> {
  const target = new URL(upstream);
  const seen: Seen[] = [];
  const lie = opts.lieAbout === undefined ? undefined : `/blobs/${opts.lieAbout}`;
  const server = http.createServer((req, res) => {
    const now: Seen = {
      method: req.method ?? '',
      path: req.url ?? '',
      ...(req.headers.range ? { range: req.headers.range } : {}),
    };
    const failed = opts.fail?.(now, seen) === true;
    seen.push(now);
    if (failed) {
      req.resume();
      res.writeHead(500, { 'content-type': 'application/json' });
      res.end('{"errors":[{"code":"UNKNOWN","message":"unknown error"}]}');
      return;
    }
    const fwd = http.request(
      {
        host: target.hostname,
        port: target.port,
        method: req.method,
        path: req.url,
        headers: { ...req.headers, host: target.host },
      },
      (up) => {
        res.writeHead(up.statusCode ?? 502, up.headers);
        const lying = lie !== undefined && req.url?.endsWith(lie) === true && up.statusCode === 200;
        const rate = opts.bytesPerSecond;
        let first = true;
        up.on('data', (chunk: Buffer) => {
          const out = lying && first ? Buffer.from(chunk) : chunk;
          if (lying && first && out.length > 0) out[out.length - 1]! ^= 0xff;
          first = false;
          const flushed = res.write(out);
          if (rate !== undefined) {
            up.pause();
            setTimeout(() => up.resume(), (out.length / rate) * 1000);
          } else if (!flushed) {
            up.pause();
            res.once('drain', () => up.resume());
          }
        });
        up.on('aborted', () => res.destroy());
        up.on('end', () => res.end());
        up.on('error', () => res.destroy());
      },
    );
    fwd.on('error', () => res.destroy());
    req.pipe(fwd);
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const { port } = server.address() as AddressInfo;
  return {
    host: `127.0.0.1:${port}`,
    seen,
    close: () =>
      new Promise((r) => {
        server.closeAllConnections();
        server.close(() => r());
      }),
  };
}

/** The GETs of `seen` for these blobs. */
export const blobGets = (seen: readonly Seen[], digests: readonly string[]): Seen[] =>
  seen.filter((s) => s.method === 'GET' && digests.some((d) => s.path.endsWith(`/blobs/${d}`)));
