// Accept negotiation and Range parsing for the facade's answers.
//
// Manifests: a composed image has one form (Docker schema2 or OCI, see compose/media-types.ts) and one digest.
// Converting it for a client that accepts only the other form would serve bytes under a second digest that
// a later GET by digest could not reproduce, so we do what the distribution registry does for OCI manifests:
// 404 MANIFEST_UNKNOWN naming the type we have. No Accept header, `*/*`, `application/*` or
// `application/json` accept anything (Gitpod's facade rejects those; clients such as curl send them).
import type { ByteRange } from '../../oci/blob.ts';
import { bareMediaType } from '../../oci/media-types.ts';

// Whether an Accept header (all values) admits `mediaType`. The most specific range that names it decides
// (RFC 9110 12.5.1: the type itself, then `application/*`, then `*/*` and our `application/json`), so
// `<type>;q=0, */*` refuses the type.
export function accepts(acceptHeader: string | string[] | undefined, mediaType: string): boolean {
  const values = Array.isArray(acceptHeader)
    ? acceptHeader
    : acceptHeader === undefined
      ? []
      : [acceptHeader];
  const items = values
    .flatMap((v) => v.split(','))
    .map((v) => v.trim())
    .filter((v) => v !== '');
  if (items.length === 0) return true;
  const want = bareMediaType(mediaType);
  let best: { rank: number; q: number } | undefined;
  for (const item of items) {
    const [typePart, ...params] = item.split(';');
    const rank = specificity(bareMediaType(typePart ?? ''), want);
    if (rank === 0) continue;
    const q = qualityOf(params);
    if (!best || rank > best.rank || (rank === best.rank && q > best.q)) best = { rank, q };
  }
  return best !== undefined && best.q > 0;
}

/** How specifically an Accept range names `want`: 0 not at all, 3 exactly. */
function specificity(range: string, want: string): number {
  if (range === want) return 3;
  if (range === 'application/*') return 2;
  if (range === '*/*' || range === '*' || range === 'application/json') return 1;
  return 0;
}

/** The `q` parameter (its name is case-insensitive); 1 when absent or not a number. */
function qualityOf(params: string[]): number {
  const q = params.map((p) => p.trim()).find((p) => /^q=/i.test(p));
  const n = q === undefined ? Number.NaN : Number(q.slice(2));
  return Number.isNaN(n) ? 1 : n;
}

/**
 * Whether an If-None-Match header (all values) names `digest`'s entity tag, so a GET or HEAD is answered 304
 * Not Modified. Entity tags as RFC 9110 13.1.2 compares them for this header (weakly, `*` for any), and
 * also the bare digest unquoted, which docker-registry takes for manifests.
 */
export function noneMatchHits(header: string | string[] | undefined, digest: string): boolean {
  const values = Array.isArray(header) ? header : header === undefined ? [] : [header];
  return values
    .flatMap((v) => v.split(','))
    .map((v) => v.trim())
    .some((v) => v === '*' || v.replace(/^W\//, '') === `"${digest}"` || v === digest);
}

export type RangeAnswer =
  | { kind: 'full' }
  | ({ kind: 'partial' } & Required<ByteRange>)
  | { kind: 'unsatisfiable' };

/**
 * One byte range of `size` bytes. Anything but a single well-formed `bytes=` range is
 * ignored and the whole blob served, as RFC 9110 allows; a range that starts past the end, or ends before
 * it starts, is unsatisfiable.
 */
export function parseRange(header: string | undefined, size: number): RangeAnswer {
  if (header === undefined) return { kind: 'full' };
  const m = /^bytes=(\d*)-(\d*)$/.exec(header.trim());
  if (!m) return { kind: 'full' };
  const [, a, b] = m;
  if (a === '' && b === '') return { kind: 'full' };
  if (a === '') {
    const n = Number(b);
    if (n === 0) return { kind: 'unsatisfiable' };
    const offset = Math.max(0, size - n);
    return { kind: 'partial', offset, length: size - offset };
  }
  const start = Number(a);
  if (!Number.isSafeInteger(start)) return { kind: 'unsatisfiable' };
  if (start >= size) return { kind: 'unsatisfiable' };
  if (b === '') return { kind: 'partial', offset: start, length: size - start };
  const last = Number(b);
  // Invalid (RFC 9110 14.1.1): 416, as docker-registry (Go's ServeContent) and the OCI conformance
  // suite have it.
  if (last < start) return { kind: 'unsatisfiable' };
  return { kind: 'partial', offset: start, length: Math.min(size, last + 1) - start };
}
