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
 */
export async function countingProxy(
  upstream: string,
  opts: { lieAbout?: string } = {},
): Promise<{ host: string; seen: Seen[]; close(): Promise<void> }> {
  const target = new URL(upstream);
  const seen: Seen[] = [];
  const lie = opts.lieAbout === undefined ? undefined : `/blobs/${opts.lieAbout}`;
  const server = http.createServer((req, res) => {
    seen.push({
      method: req.method ?? '',
      path: req.url ?? '',
      ...(req.headers.range ? { range: req.headers.range } : {}),
    });
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
        if (lie === undefined || !req.url?.endsWith(lie) || up.statusCode !== 200) {
          up.pipe(res);
          return;
        }
        let first = true;
        up.on('data', (chunk: Buffer) => {
          const out = first ? Buffer.from(chunk) : chunk;
          if (first && out.length > 0) out[out.length - 1]! ^= 0xff;
          first = false;
          res.write(out);
        });
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
