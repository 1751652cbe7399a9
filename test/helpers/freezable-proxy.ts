// A TCP proxy to a local port whose freeze() makes the connections open at that moment go silent both ways
// without closing them (a server gone behind a connection that sends no reset: its node died, or a
// failover moved its address); connections made later are forwarded.
import { type AddressInfo, connect, createServer, type Socket } from 'node:net';

export async function freezableProxy(port: number) {
  const pairs = new Set<[Socket, Socket]>();
  const server = createServer((client) => {
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
      await new Promise<void>((r) => server.close(() => r()));
    },
  };
}
