import assert from 'node:assert/strict';
import { request } from 'node:http';
import { test } from 'node:test';
import { Registry } from 'prom-client';
import { serveMetrics } from './metrics.ts';

/** One request to the listener: status, Allow header and body. */
function ask(
  port: number,
  method: string,
  path: string,
): Promise<{ status: number; allow?: string; body: string }> {
  return new Promise((resolve, reject) => {
    const req = request({ host: '127.0.0.1', port, method, path, timeout: 10_000 }, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (c: string) => {
        body += c;
      });
      res.on('end', () =>
        resolve({
          status: res.statusCode ?? 0,
          ...(res.headers.allow && { allow: res.headers.allow }),
          body,
        }),
      );
    });
    req.on('timeout', () => req.destroy(new Error(`${method} ${path}: no answer`)));
    req.on('error', reject);
    req.end();
  });
}

test('the metrics listener answers HEAD as GET and another method on its paths with 405, as an HTTP server should', async (t) => {
  const ops = await serveMetrics({ registry: new Registry() }, '127.0.0.1', 0, async () => ({ ready: true }));
  t.after(() => ops.close());
  for (const path of ['/metrics', '/readyz', '/healthz']) {
    const get = await ask(ops.port, 'GET', path);
    assert.equal(get.status, 200, `GET ${path}`);
    assert.deepEqual(await ask(ops.port, 'HEAD', path), { status: 200, body: '' }, `HEAD ${path}`);
    for (const method of ['POST', 'PUT', 'DELETE', 'OPTIONS']) {
      const r = await ask(ops.port, method, path);
      assert.equal(r.status, 405, `${method} ${path}`);
      assert.equal(r.allow, 'GET, HEAD', `${method} ${path}`);
    }
  }
  assert.equal((await ask(ops.port, 'GET', '/metrics?x=1')).status, 200);
  for (const path of ['/', '/metrics/', '/nope', '//metrics']) {
    assert.equal((await ask(ops.port, 'GET', path)).status, 404, path);
    assert.equal((await ask(ops.port, 'POST', path)).status, 404, `POST ${path}`);
  }
});
