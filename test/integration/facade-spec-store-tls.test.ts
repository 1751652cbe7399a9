// The facade's own spec store served over gRPC with TLS and client certificates: a platform holding a
// certificate the configured client CA signed puts and reads specs (so does `strata spec … --address`
// with the client TLS flags); a client without one, with one from
// another CA, or without TLS is refused before any call; a rotated server certificate is served to new
// connections.
import assert from 'node:assert/strict';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { connect } from 'node:tls';
import { pino } from 'pino';
import { Registry } from 'prom-client';
import { GrpcSpecProvider } from '../../src/api/clients/spec-provider.ts';
import { GrpcSpecStore } from '../../src/api/clients/spec-store.ts';
import type { GrpcTls } from '../../src/api/grpc/client.ts';
import { errorKind } from '../../src/errors.ts';
import type { ImageSpec } from '../../src/facade/spec.ts';
import { type FacadeApp, startFacade } from '../../src/server/facade.ts';
import { facadeConfigFrom } from '../../src/server/facade-config.ts';
import { runCommand, waitFor } from '../helpers/process.ts';
import { makeMutualTlsFiles, makeServerCert, mutualTlsClientFlags } from '../helpers/tls-cert.ts';
import { removeTempDir, tempDir } from '../helpers/tmp.ts';

const logger = pino({ level: 'silent' });
const STRATA = new URL('../../bin/strata', import.meta.url).pathname;
const strata = (args: string[]) => runCommand(STRATA, args, { timeoutMs: 60_000 });
const SPEC: ImageSpec = {
  baseRef: '127.0.0.1:5000/base/busybox:latest',
  ideRef: '',
  supervisorRef: '',
  ideLayerRefs: [],
  contentLayers: [],
};

describe('facade spec store over gRPC with TLS', () => {
  let work: string;
  let app: FacadeApp;
  let address: string;
  let trusted: GrpcTls;
  const file = (name: string) => join(work, name);

  /** The subject CN of the certificate the listener presents to a new connection (with a client cert). */
  const servedCommonName = (): Promise<string> =>
    new Promise((resolve, reject) => {
      const s = connect(
        {
          host: '127.0.0.1',
          port: app.specProviderPort!,
          rejectUnauthorized: false,
          cert: Buffer.from(trusted.cert!),
          key: Buffer.from(trusted.key!),
          ALPNProtocols: ['h2'],
        },
        () => {
          const cn = s.getPeerCertificate().subject.CN;
          s.end();
          resolve(String(cn));
        },
      );
      s.on('error', reject);
    });

  before(async () => {
    work = await tempDir('facade-spec-store-tls');
    // client.crt, self-signed, is the client CA; other.crt is a certificate it did not sign.
    await makeMutualTlsFiles(work, 'first');
    const config = facadeConfigFrom(
      {
        listen: '127.0.0.1:0',
        specProviders: {
          store: {
            dir: 'specs',
            listen: '127.0.0.1:0',
            writable: true,
            tls: { cert: 'server.crt', key: 'server.key', clientCa: 'client.crt' },
          },
        },
        cache: { dir: 'cache', maxBytes: '64MiB' },
        prefetch: { enabled: false },
      },
      work,
    );
    app = await startFacade(config, { logger, registry: new Registry() });
    address = `127.0.0.1:${app.specProviderPort}`;
    trusted = {
      ca: await readFile(file('server.crt')),
      cert: await readFile(file('client.crt')),
      key: await readFile(file('client.key')),
    };
  });

  after(async () => {
    await app?.close();
    if (work) await removeTempDir(work);
  });

  test('a client with a certificate the client CA signed puts, lists and reads specs', async () => {
    const store = new GrpcSpecStore(address, { tls: trusted });
    const reader = new GrpcSpecProvider({ address, tls: trusted });
    try {
      await store.put('ws-tls', SPEC);
      assert.deepEqual(await store.list(), ['ws-tls']);
      assert.equal((await reader.getSpec('ws-tls')).baseRef, SPEC.baseRef);
    } finally {
      store.close();
      reader.close();
    }
  });

  test('strata spec put, ls and get over TLS with the client certificate flags', async () => {
    const tlsFlags = mutualTlsClientFlags(work);
    await strata(['spec', 'put', 'ws-cli', '--address', address, ...tlsFlags, '--base-ref', SPEC.baseRef]);
    assert.ok(
      (await strata(['spec', 'ls', '--address', address, ...tlsFlags])).split('\n').includes('ws-cli'),
    );
    const got = JSON.parse(await strata(['spec', 'get', 'ws-cli', '--address', address, ...tlsFlags]));
    assert.equal(got.baseRef, SPEC.baseRef);
    // Without the client certificate the listener refuses; half of the pair is a usage error.
    await assert.rejects(strata(['spec', 'ls', '--address', address, '--tls-ca', file('server.crt')]));
    await assert.rejects(
      strata(['spec', 'ls', '--address', address, '--tls-client-cert', file('client.crt')]),
      /--tls-client-cert and --tls-client-key go together/,
    );
  });

  test('no client certificate, one from another CA, or no TLS at all: refused, nothing stored', async () => {
    const clients = [
      new GrpcSpecStore(address, { tls: { ca: trusted.ca }, timeoutMs: 3000 }),
      new GrpcSpecStore(address, {
        tls: {
          ca: trusted.ca,
          cert: await readFile(file('other.crt')),
          key: await readFile(file('other.key')),
        },
        timeoutMs: 3000,
      }),
      new GrpcSpecStore(address, { timeoutMs: 3000 }),
    ];
    for (const [i, c] of clients.entries()) {
      try {
        await assert.rejects(c.put(`ws-refused-${i}`, SPEC), (err: unknown) => {
          assert.equal(errorKind(err), 'Unavailable', String(err));
          return true;
        });
      } finally {
        c.close();
      }
    }
    const store = new GrpcSpecStore(address, { tls: trusted });
    try {
      assert.ok(!(await store.list()).some((id) => id.startsWith('ws-refused')));
    } finally {
      store.close();
    }
  });

  test('a rotated server certificate is served to new connections, and is counted as a reload', async () => {
    assert.equal(await servedCommonName(), 'first');
    await makeServerCert(work, 'second');
    await waitFor(async () => (await servedCommonName()) === 'second', 10_000, {
      what: 'the new certificate',
    });
    const reloads = (await app.metrics.reloads.get()).values.find(
      (v) => v.labels.what === 'spec-store-tls' && v.labels.result === 'ok',
    );
    assert.ok((reloads?.value ?? 0) >= 1);
    // A client trusting the new certificate still gets in with its client certificate.
    const store = new GrpcSpecStore(address, { tls: { ...trusted, ca: await readFile(file('server.crt')) } });
    try {
      assert.ok((await store.list()).includes('ws-tls'));
    } finally {
      store.close();
    }
  });
});
