// `strata spec serve` over TLS, set by its flags: `strata spec put/ls/get --address` with the client TLS
// flags are served; a client that does not trust the server's CA, one without a client certificate and
// one without TLS are refused with the reason said; incomplete TLS flags are refused before anything is
// served; a rotated certificate reaches new connections, and SIGHUP re-reads it instead of ending the
// process.
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { freePort, isListening } from '../helpers/ports.ts';
import { runProcess, type ServerProcess, spawnServer, waitFor } from '../helpers/process.ts';
import {
  makeMutualTlsFiles,
  makeServerCert,
  mutualTlsClientFlags,
  servedCommonName,
} from '../helpers/tls-cert.ts';
import { removeTempDir, tempDir } from '../helpers/tmp.ts';

const STRATA = new URL('../../bin/strata', import.meta.url).pathname;
const strata = (args: string[]) => runProcess(STRATA, args, { timeoutMs: 60_000 });
const BASE = '127.0.0.1:5000/base/busybox:latest';

describe('strata spec serve with TLS flags', () => {
  let work: string;
  let port: number;
  let address: string;
  let server: ServerProcess;
  const file = (name: string) => join(work, name);
  const trusted = () => mutualTlsClientFlags(work);

  before(async () => {
    work = await tempDir('spec-serve-tls');
    // client.crt, self-signed, is the client CA; other.crt is a certificate it did not sign.
    await makeMutualTlsFiles(work, 'first');
    port = await freePort();
    address = `127.0.0.1:${port}`;
    server = await spawnServer(
      STRATA,
      [
        'spec',
        'serve',
        '--spec-store',
        file('specs'),
        '--listen',
        address,
        '--writable',
        '--tls-cert',
        file('server.crt'),
        '--tls-key',
        file('server.key'),
        '--tls-client-ca',
        file('client.crt'),
      ],
      { readyCheck: () => isListening(port), logFile: file('serve.log'), name: 'strata spec serve' },
    );
  });

  after(async () => {
    await server?.stop();
    if (work) await removeTempDir(work);
  });

  test('put, ls and get with the client TLS flags', async () => {
    const put = await strata([
      'spec',
      'put',
      'ws-tls',
      '--address',
      address,
      ...trusted(),
      '--base-ref',
      BASE,
    ]);
    assert.equal(put.code, 0, put.stderr);
    const ls = await strata(['spec', 'ls', '--address', address, ...trusted()]);
    assert.equal(ls.code, 0, ls.stderr);
    assert.deepEqual(ls.stdout.split('\n').filter(Boolean), ['ws-tls']);
    const get = await strata(['spec', 'get', 'ws-tls', '--address', address, ...trusted()]);
    assert.equal(get.code, 0, get.stderr);
    assert.equal(JSON.parse(get.stdout).baseRef, BASE);
    // The address is an IP: Node's warning about an IP as the SNI name (DEP0123) is not printed.
    for (const r of [put, ls, get]) assert.doesNotMatch(r.stderr, /DEP0123|ServerName/, r.stderr);
  });

  test("a client that does not trust the server's CA is refused, saying why", async () => {
    // System roots only, or another CA: the server's self-signed certificate is not trusted.
    for (const ca of [[], ['--tls-ca', file('other.crt')]]) {
      const r = await strata([
        'spec',
        'ls',
        '--address',
        address,
        ...ca,
        '--tls-client-cert',
        file('client.crt'),
        '--tls-client-key',
        file('client.key'),
      ]);
      assert.notEqual(r.code, 0, r.stdout);
      assert.match(r.stderr, /^strata spec: .*certificate/m, r.stderr);
      assert.doesNotMatch(r.stderr, /\n\s+at /, 'no stack trace');
    }
  });

  test('a client without a certificate the client CA signed, or without TLS, is refused', async () => {
    const cases = [
      ['--tls-ca', file('server.crt')],
      [
        '--tls-ca',
        file('server.crt'),
        '--tls-client-cert',
        file('other.crt'),
        '--tls-client-key',
        file('other.key'),
      ],
      [],
    ];
    const said = [/certificate required/, /^strata spec: /m, /^strata spec: /m];
    for (const [i, flags] of cases.entries()) {
      const r = await strata([
        'spec',
        'put',
        'ws-refused',
        '--address',
        address,
        ...flags,
        '--base-ref',
        BASE,
      ]);
      assert.notEqual(r.code, 0, `${flags.join(' ')}: ${r.stdout}`);
      assert.match(r.stderr, said[i]!, r.stderr);
      assert.doesNotMatch(r.stderr, /\n\s+at /, 'no stack trace');
    }
    const ls = await strata(['spec', 'ls', '--address', address, ...trusted()]);
    assert.equal(ls.code, 0, ls.stderr);
    assert.ok(!ls.stdout.includes('ws-refused'), 'nothing stored by a refused client');
  });

  test('a rotated certificate is served to new connections; SIGHUP re-reads it and the store keeps serving', async () => {
    assert.equal(await servedCommonName(port), 'first');
    await makeServerCert(work, 'second');
    process.kill(server.proc.pid!, 'SIGHUP');
    await waitFor(async () => (await servedCommonName(port)) === 'second', 10_000, {
      what: 'the new certificate',
    });
    assert.equal(server.proc.exitCode, null, 'still running after SIGHUP');
    assert.equal(server.proc.signalCode, null, 'still running after SIGHUP');
    const ls = await strata(['spec', 'ls', '--address', address, ...trusted()]);
    assert.equal(ls.code, 0, ls.stderr);
    assert.ok(ls.stdout.includes('ws-tls'));
  });
});

test('strata spec serve refuses incomplete TLS flags, naming the missing one, before serving', async () => {
  const work = await tempDir('spec-serve-tls-flags');
  try {
    const port = await freePort();
    const base = ['spec', 'serve', '--spec-store', join(work, 'specs'), '--listen', `127.0.0.1:${port}`];
    const cases: [string[], RegExp][] = [
      [['--tls-cert', join(work, 'a.crt')], /--tls-key is required with --tls-cert/],
      [['--tls-key', join(work, 'a.key')], /--tls-cert is required with --tls-key/],
      [['--tls-client-ca', join(work, 'ca.crt')], /--tls-cert is required with --tls-client-ca/],
      [
        ['--tls-cert', join(work, 'a.crt'), '--tls-client-ca', join(work, 'ca.crt')],
        /--tls-key is required with --tls-cert and --tls-client-ca/,
      ],
    ];
    for (const [flags, want] of cases) {
      const r = await strata([...base, ...flags]);
      assert.notEqual(r.code, 0, flags.join(' '));
      assert.match(r.stderr, want, r.stderr);
      assert.doesNotMatch(r.stderr, /\n\s+at /, 'no stack trace');
      assert.equal(await isListening(port), false);
    }
  } finally {
    await removeTempDir(work);
  }
});
