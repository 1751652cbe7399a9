// Extra CA certificates: a loopback registry speaking TLS with a self-signed certificate is trusted only
// when its certificate is given. The server is a few lines of node:https on 127.0.0.1.
import assert from 'node:assert/strict';
import { readFile } from 'node:fs/promises';
import { createServer } from 'node:https';
import type { AddressInfo } from 'node:net';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import { makeSelfSignedCert } from '../../test/helpers/tls-cert.ts';
import { removeTempDir, tempDir } from '../../test/helpers/tmp.ts';
import { errorKind } from '../errors.ts';
import { RegistryClient } from './client.ts';

let dir: string;
let host: string;
let close: () => Promise<void>;

before(async () => {
  dir = await tempDir('registry-tls');
  await makeSelfSignedCert({
    keyFile: join(dir, 'key.pem'),
    certFile: join(dir, 'cert.pem'),
    cn: 'strata-test',
    ip: '127.0.0.1',
    days: 1,
  });
  const server = createServer(
    { key: await readFile(join(dir, 'key.pem')), cert: await readFile(join(dir, 'cert.pem')) },
    (_req, res) => {
      res.writeHead(200, { 'docker-distribution-api-version': 'registry/2.0', 'content-length': 2 });
      res.end('{}');
    },
  );
  await new Promise<void>((resolve) => server.listen({ host: '127.0.0.1', port: 0 }, resolve));
  host = `127.0.0.1:${(server.address() as AddressInfo).port}`;
  close = () =>
    new Promise((resolve) => {
      server.closeAllConnections();
      server.close(() => resolve());
    });
});
after(async () => {
  await close?.();
  await removeTempDir(dir);
});

test('TLS to a loopback host: refused without the CA, accepted with it', async () => {
  const untrusting = new RegistryClient({ hosts: { tls: [host] }, retry: { attempts: 1 } });
  const trusting = new RegistryClient({
    hosts: { tls: [host], ca: [await readFile(join(dir, 'cert.pem'), 'utf8')] },
  });
  try {
    await assert.rejects(untrusting.ping(host), (err: Error) => {
      assert.equal(errorKind(err), 'Unavailable');
      assert.match(err.message, /certificate/i);
      return true;
    });
    await trusting.ping(host);
  } finally {
    await untrusting.close();
    await trusting.close();
  }
});
