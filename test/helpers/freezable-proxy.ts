// A TCP proxy to a local port whose freeze() makes the connections open at that moment go silent both ways
// without closing them (a server gone behind a connection that sends no reset: its node died, or a
// failover moved its address); connections made later are forwarded, unless hold(true) has them accepted
// and never answered (a host that takes connections and hangs) until hold(false).
import { type AddressInfo, connect, createServer, type Socket } from 'node:net';

export async function freezableProxy(port: number) {
  const pairs = new Set<[Socket, Socket]>();
  const held = new Set<Socket>();
  let holding = false;
  const server = createServer((client) => {
    client.on('error', () => {});
    if (holding) {
      held.add(client);
      // Read and drop: the client's handshake is taken and never answered.
      client.on('data', () => {});
      client.on('close', () => held.delete(client));
      return;
    }
    const upstream = connect(port, '127.0.0.1');
    const pair: [Socket, Socket] = [client, upstream];
    pairs.add(pair);
    client.pipe(upstream).pipe(client);
    for (const s of pair) {
      s.on('error', () => {});
      s.on('close', () => {
        for (const o of pair) o.destroy();
        pairs.delete(pair);
      });
    }
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  return {
    url: `redis://127.0.0.1:${(server.address() as AddressInfo).port}`,
    /** Connections accepted while holding and not closed since. */
    get held(): number {
      return held.size;
    },
    hold(on: boolean) {
      holding = on;
    },
    freeze() {
      for (const [client, upstream] of pairs) {
        client.unpipe(upstream);
        upstream.unpipe(client);
        // Read and drop, so nothing ever reaches the other side.
        client.on('data', () => {});
        upstream.on('data', () => {});
      }
    },
    async close() {
      for (const pair of pairs) for (const s of pair) s.destroy();
      for (const s of held) s.destroy();
      await new Promise<void>((r) => server.close(() => r()));
    },
  };
}
