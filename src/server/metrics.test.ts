import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { Content } from '../api/gen/containerd/services/content/v1/content_pb.ts';
import { Images } from '../api/gen/containerd/services/images/v1/images_pb.ts';
import { implement } from '../api/grpc/service.ts';
import { notFound } from '../errors.ts';
import { DaemonMetrics } from './metrics.ts';

const count = (text: string, method: string, code: string, service = 'images.v1.Images'): number => {
  const line = text
    .split('\n')
    .find((l) =>
      l.startsWith(
        `strata_grpc_requests_total{method="/containerd.services.${service}/${method}",code="${code}"}`,
      ),
    );
  return line ? Number(line.split(' ').at(-1)) : 0;
};

describe('DaemonMetrics.instrument', () => {
  it('counts calls by method and code, synchronous and asynchronous, and times them', async () => {
    const m = new DaemonMetrics();
    const reg = m.instrument(
      implement(Images, {
        get: (req) => {
          if (req.name === 'missing') throw notFound('image "missing": not found');
          return { image: { name: req.name } };
        },
        list: async (req) => {
          if (req.filters.length > 0) throw notFound('nothing');
          return {};
        },
      }),
    );
    const get = reg.impl.get as (req: { name: string }) => unknown;
    const list = reg.impl.list as (req: { filters: string[] }) => Promise<unknown>;

    // A synchronous handler still answers synchronously, with its own value.
    assert.deepEqual(get({ name: 'a' }), { image: { name: 'a' } });
    get({ name: 'b' });
    assert.throws(() => get({ name: 'missing' }), /not found/);
    assert.deepEqual(await list({ filters: [] }), {});
    await assert.rejects(list({ filters: ['x'] }), /nothing/);

    const text = await m.registry.metrics();
    assert.equal(count(text, 'Get', 'OK'), 2);
    assert.equal(count(text, 'Get', 'NOT_FOUND'), 1);
    assert.equal(count(text, 'List', 'OK'), 1);
    assert.equal(count(text, 'List', 'NOT_FOUND'), 1);
    assert.match(
      text,
      /strata_grpc_request_duration_seconds_count\{method="\/containerd\.services\.images\.v1\.Images\/Get"\} 3/,
    );
    assert.match(
      text,
      /strata_grpc_request_duration_seconds_count\{method="\/containerd\.services\.images\.v1\.Images\/List"\} 2/,
    );
  });
});

describe('DaemonMetrics.instrument, streams', () => {
  it('counts a stream the client stopped early (ctr cancels a Content.Read per 32 KiB) as CANCELLED', async () => {
    const m = new DaemonMetrics();
    const reg = m.instrument(
      implement(Content, {
        read: async function* () {
          for (let i = 0; i < 3; i++) yield { data: new Uint8Array(1) };
        },
      }),
    );
    const read = reg.impl.read as (req: object) => AsyncGenerator<unknown>;
    for await (const _ of read({}));
    // What the adapter does when the call is cancelled mid-stream: it stops iterating.
    for await (const _ of read({})) break;
    const text = await m.registry.metrics();
    assert.equal(count(text, 'Read', 'OK', 'content.v1.Content'), 1);
    assert.equal(count(text, 'Read', 'CANCELLED', 'content.v1.Content'), 1);
  });
});
