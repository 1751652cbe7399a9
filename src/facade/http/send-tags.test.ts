import assert from 'node:assert/strict';
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { test } from 'node:test';
import { OciHttpError } from './oci-errors.ts';
import { sendTags } from './send-tags.ts';

const TAGS = ['a', 'b', 'c'];

/** `tags/list` of TAGS on a loopback server, asked with `query`. */
async function list(query: string): Promise<{ status: number; link: string | null; tags: string[] }> {
  const server = createServer((req, res) => {
    try {
      sendTags(req, res, 'team/app', TAGS);
    } catch (err) {
      res.writeHead(err instanceof OciHttpError ? err.oci.status : 500).end();
    }
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  try {
    const { port } = server.address() as AddressInfo;
    const res = await fetch(`http://127.0.0.1:${port}/v2/team/app/tags/list?${query}`);
    const body = res.status === 200 ? ((await res.json()) as { tags: string[] }) : { tags: [] };
    return { status: res.status, link: res.headers.get('link'), tags: body.tags };
  } finally {
    server.close();
  }
}

test('tags/list pages with n and last, and a Link to the next page while there is one', async () => {
  assert.deepEqual(await list(''), { status: 200, link: null, tags: TAGS });
  assert.deepEqual(await list('n=2'), {
    status: 200,
    link: '</v2/team/app/tags/list?n=2&last=b>; rel="next"',
    tags: ['a', 'b'],
  });
  assert.deepEqual(await list('n=2&last=b'), { status: 200, link: null, tags: ['c'] });
  assert.deepEqual(await list('n=3'), { status: 200, link: null, tags: TAGS });
  assert.equal((await list('n=x')).status, 400);
});

test('tags/list with n=0: an empty page and no Link (one back to the same page would never end)', async () => {
  assert.deepEqual(await list('n=0'), { status: 200, link: null, tags: [] });
});
