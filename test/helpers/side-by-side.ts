// The daemon beside a real containerd 1.6, for differential tests: the same session of calls runs against
// each, in a namespace of its own, and what a client sees is compared.
import assert from 'node:assert/strict';
import * as grpc from '@grpc/grpc-js';
import { createClient } from '../../src/api/grpc/client.ts';
import { startContainerd } from './containerd.ts';
import { startDaemon } from './daemon.ts';

export interface Side {
  name: 'containerd' | 'strata';
  /** The socket path (what `ctr --address` takes). */
  address: string;
  client: grpc.Client;
}

export interface SideBySide {
  /** containerd first, then strata. */
  sides: readonly [Side, Side];
  /**
   * Runs `session` against containerd, then against strata, each time in the namespace `<prefix>-<n>`;
   * asserts both saw the same and returns it.
   */
  sameOnBoth(session: (side: Side, ns: string) => Promise<unknown[]>): Promise<unknown[]>;
  /** Closes the clients, stops both servers and removes their dirs. Idempotent. */
  stop(): Promise<void>;
}

/** What a gRPC call answered: its code and details, or the value `keep` picks from the answer. */
export async function answer<T>(p: Promise<T>, keep: (v: T) => unknown = () => 'OK'): Promise<unknown> {
  try {
    return keep(await p);
  } catch (err) {
    const e = err as grpc.ServiceError;
    return { code: grpc.status[e.code], details: e.details };
  }
}

export async function startSideBySide(prefix = 'parity'): Promise<SideBySide> {
  const containerd = await startContainerd();
  let daemon: Awaited<ReturnType<typeof startDaemon>>;
  try {
    daemon = await startDaemon();
  } catch (err) {
    await containerd.stop();
    throw err;
  }
  const sides = [
    { name: 'containerd', address: containerd.address, client: createClient(`unix://${containerd.address}`) },
    { name: 'strata', address: daemon.address, client: daemon.client() },
  ] as const satisfies readonly [Side, Side];
  let seq = 0;
  return {
    sides,
    async sameOnBoth(session) {
      const ns = `${prefix}-${++seq}`;
      const theirs = await session(sides[0], ns);
      const ours = await session(sides[1], ns);
      assert.deepEqual(ours, theirs);
      return ours;
    },
    async stop() {
      for (const s of sides) s.client.close();
      await containerd.stop();
      await daemon.stop();
    },
  };
}
