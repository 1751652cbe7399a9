// Opens a content layer's URL from an offset over the registry client's HTTP layer (pooled connections,
// timeouts, bounded retries, extra CAs). No credentials are ever sent to these URLs.
import { Readable } from 'node:stream';
import { dataLoss } from '../../errors.ts';
import { discard, type HttpClient, header } from '../../registry/http.ts';
import { registryError } from '../../registry/registry-errors.ts';
import type { UrlOpener } from './sources.ts';

export function urlOpener(http: HttpClient): UrlOpener {
  return async (url, offset, signal) => {
    const what = `fetch content layer from ${url.host}`;
    const res = await http.send({
      method: 'GET',
      url,
      headers: offset > 0 ? { range: `bytes=${offset}-` } : {},
      signal,
      what,
    });
    if (res.status === 200) return offset === 0 ? res.body : skip(res.body, offset);
    if (res.status === 206 && offset > 0) {
      const m = /^bytes (\d+)-\d+\/(?:\d+|\*)$/.exec(header(res, 'content-range') ?? '');
      if (m && Number(m[1]) === offset) return res.body;
      res.body.destroy();
      throw dataLoss(`${what}: asked for bytes from ${offset}, got ${header(res, 'content-range')}`);
    }
    await discard(res.body);
    throw registryError(res.status, [], what);
  };
}

/** A server that ignores Range sends everything again; drop what we already have. */
function skip(body: Readable, n: number): Readable {
  let left = n;
  return Readable.from(
    (async function* () {
      for await (const raw of body) {
        let chunk = raw as Buffer;
        if (left > 0) {
          const k = Math.min(left, chunk.length);
          left -= k;
          chunk = chunk.subarray(k);
        }
        if (chunk.length > 0) yield chunk;
      }
    })(),
  );
}
