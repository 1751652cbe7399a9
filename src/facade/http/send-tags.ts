// The `tags/list` answer, the same for composed and hosted repositories.
import type { IncomingMessage, ServerResponse } from 'node:http';
import { OciHttpError } from './oci-errors.ts';

/** Answers `tags/list` with the distribution API's `n` and `last`, and a Link when `n` cut the list short. */
export function sendTags(req: IncomingMessage, res: ServerResponse, repository: string, all: string[]): void {
  const query = new URLSearchParams((req.url ?? '').split('?')[1] ?? '');
  const n = query.get('n');
  if (n !== null && !/^\d{1,9}$/.test(n)) {
    throw new OciHttpError(
      400,
      'PAGINATION_NUMBER_INVALID',
      `invalid number of results ${JSON.stringify(n)}`,
    );
  }
  const last = query.get('last');
  let tags = last === null ? all : all.filter((t) => t > last);
  const headers: Record<string, string> = { 'content-type': 'application/json' };
  if (n !== null && tags.length > Number(n)) {
    tags = tags.slice(0, Number(n));
    // n=0 asks for no tags: a next page would be this one again, for ever.
    const shown = tags.at(-1);
    if (shown !== undefined) {
      const next = new URLSearchParams({ n, last: shown });
      headers.link = `</v2/${repository}/tags/list?${next}>; rel="next"`;
    }
  }
  const body = JSON.stringify({ name: repository, tags });
  res.writeHead(200, { ...headers, 'content-length': Buffer.byteLength(body) });
  res.end(req.method === 'HEAD' ? undefined : body);
}
