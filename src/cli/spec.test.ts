import assert from 'node:assert/strict';
import { test } from 'node:test';
import { serveConnectionsFrom } from './spec.ts';

const base = { specStore: '/s', listen: '127.0.0.1:5051', logLevel: 'info' };

test("spec serve's connection flags are read as the builder's connections section", async () => {
  assert.deepEqual(await serveConnectionsFrom(base), {});
  assert.deepEqual(
    await serveConnectionsFrom({
      ...base,
      maxConnections: '64',
      idleSeconds: '30',
      keepaliveSeconds: '15',
      keepaliveTimeoutSeconds: '5',
      minPingIntervalSeconds: '2.5',
    }),
    { max: 64, idleMs: 30_000, keepaliveMs: 15_000, keepaliveTimeoutMs: 5000, minPingIntervalMs: 2500 },
  );
  await assert.rejects(
    serveConnectionsFrom({ ...base, maxConnections: '0' }),
    /^InvalidArgumentError: --max-connections: want a whole number of at least 1, got 0$/,
  );
  await assert.rejects(
    serveConnectionsFrom({ ...base, idleSeconds: 'soon' }),
    /--idle-seconds: want a positive number, got "soon"/,
  );
  await assert.rejects(
    serveConnectionsFrom({ ...base, keepaliveTimeoutSeconds: '' }),
    /--keepalive-timeout-seconds: /,
  );
});
