import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { Images } from '../api/gen/containerd/services/images/v1/images_pb.ts';
import { implement } from '../api/grpc/service.ts';
import { notFound } from '../errors.ts';
import { DaemonMetrics } from './metrics.ts';

const count = (text: string, method: string, code: string): number => {
  const line = text
    .split('\n')
    .find((l) =>
      l.startsWith(
        `strata_grpc_requests_total{method="/containerd.services.images.v1.Images/${method}",code="${code}"}`,
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
