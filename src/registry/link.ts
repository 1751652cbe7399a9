// RFC 8288 Link headers, as registries use them to paginate tag lists: `</v2/x/tags/list?n=2&last=b>; rel="next"`.

/** The `rel="next"` target, resolved against the URL of the page that carried it. */
export function nextLink(value: string | string[] | undefined, base: URL): URL | undefined {
  const values = value === undefined ? [] : Array.isArray(value) ? value : [value];
  for (const v of values) {
    for (const m of v.matchAll(/<([^>]*)>((?:\s*;\s*[^;,]+)*)/g)) {
      const params = m[2] ?? '';
      const rel = /;\s*rel\s*=\s*(?:"([^"]*)"|([^\s;,]+))/i.exec(params);
      const rels = (rel?.[1] ?? rel?.[2] ?? '').toLowerCase().split(/\s+/);
      if (!rels.includes('next')) continue;
      try {
        return new URL(m[1] ?? '', base);
      } catch {
        return undefined;
      }
    }
  }
  return undefined;
}
