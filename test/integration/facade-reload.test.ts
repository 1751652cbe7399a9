// Hot reload of a real `strata facade` process (file watch, and SIGHUP for at once): fixed specs and the
// htpasswd file change without a restart; a bad edit of each is logged (and counted), and the previous
// version stays in use; a manifest composed before a reload stays pullable by digest, blobs too. (Docker
// auth's bad edits: src/registry/docker-config.test.ts; the TLS certificate: facade-auth.test.ts.)
import assert from 'node:assert/strict';
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import bcrypt from 'bcryptjs';
import { type PushedImage, pushBusybox, pushFilesImage } from '../helpers/images.ts';
import { freePort } from '../helpers/ports.ts';
import { type ServerProcess, spawnServer, waitFor } from '../helpers/process.ts';
import { startRegistry, type TestRegistry } from '../helpers/registry.ts';
import { removeTempDir, tempDir } from '../helpers/tmp.ts';

const STRATA = new URL('../../bin/strata', import.meta.url).pathname;
const ACCEPT =
  'application/vnd.oci.image.manifest.v1+json, application/vnd.docker.distribution.manifest.v2+json';

describe('facade hot reload', () => {
  let reg: TestRegistry;
  let busybox: PushedImage;
  let ide: PushedImage;
  let work: string;
  let facade: ServerProcess;
  let url: string;
  const files = { specs: '', htpasswd: '' };

  before(async () => {
    work = await tempDir('facade-reload');
    reg = await startRegistry();
    busybox = await pushBusybox(reg, 'base/busybox');
    ide = await pushFilesImage(reg, 'ide/code', { layers: [{ 'ide/bin/marker': 'code' }] });
    files.specs = join(work, 'specs.json');
    files.htpasswd = join(work, 'htpasswd');
    await writeFile(files.specs, JSON.stringify({ ws: { baseRef: busybox.ref } }));
    await writeFile(files.htpasswd, `alice:${bcrypt.hashSync('one', 4)}\n`);
    const port = await freePort();
    url = `http://127.0.0.1:${port}`;
    const config = join(work, 'facade.yaml');
    await writeFile(
      config,
      JSON.stringify({
        listen: `127.0.0.1:${port}`,
        specProviders: { fixedFile: files.specs },
        cache: { dir: join(work, 'cache') },
        auth: { htpasswd: files.htpasswd },
      }),
    );
    facade = await spawnServer(STRATA, ['facade', '--config', config], {
      name: 'strata facade',
      logFile: join(work, 'facade.log'),
      readyCheck: async () => (await fetch(`${url}/readyz`)).status === 200,
    });
  });

  after(async () => {
    await facade?.stop();
    await reg?.stop();
    if (work) await removeTempDir(work);
  });

  const basic = (user: string, password: string) =>
    `Basic ${Buffer.from(`${user}:${password}`).toString('base64')}`;

  async function get(
    path: string,
    password: string,
  ): Promise<{ status: number; body: Buffer; digest: string }> {
    const res = await fetch(`${url}${path}`, {
      headers: { accept: ACCEPT, authorization: basic('alice', password) },
    });
    return {
      status: res.status,
      body: Buffer.from(await res.arrayBuffer()),
      digest: res.headers.get('docker-content-digest') ?? '',
    };
  }

  async function refused(what: string): Promise<number> {
    const text = (await (await fetch(`${url}/metrics`)).text()).split('\n');
    const line = text.find((l) =>
      l.startsWith(`strata_facade_reloads_total{what="${what}",result="refused"} `),
    );
    return line ? Number(line.split(' ').pop()) : 0;
  }

  test('SIGHUP: new specs and passwords apply; the manifest composed before stays pullable by digest', async () => {
    const before = await get('/v2/fixed/ws/manifests/latest', 'one');
    assert.equal(before.status, 200);
    const old = JSON.parse(before.body.toString()) as {
      config: { digest: string };
      layers: { digest: string }[];
    };

    await writeFile(files.specs, JSON.stringify({ ws: { baseRef: busybox.ref, ideRef: ide.ref } }));
    await writeFile(files.htpasswd, `alice:${bcrypt.hashSync('two', 4)}\n`);
    facade.proc.kill('SIGHUP');
    await waitFor(async () => (await get('/v2/', 'two')).status === 200, 10_000, {
      what: 'the new password',
    });
    assert.equal((await get('/v2/', 'one')).status, 401);

    // (A composition is shared for a second by requests arriving together.)
    const now = await waitFor(
      async () => {
        const m = await get('/v2/fixed/ws/manifests/latest', 'two');
        return m.status === 200 && m.digest !== before.digest ? m : undefined;
      },
      10_000,
      { what: 'the new spec composing another image' },
    );
    const composed = JSON.parse(now.body.toString()) as { layers: unknown[] };
    assert.equal(composed.layers.length, old.layers.length + ide.layers, 'the IDE layer is added');
    const byDigest = await get(`/v2/fixed/ws/manifests/${before.digest}`, 'two');
    assert.equal(byDigest.status, 200);
    assert.ok(byDigest.body.equals(before.body), 'the same bytes as before the reload');
    for (const d of [old.config.digest, old.layers[0]!.digest]) {
      assert.equal((await get(`/v2/fixed/ws/blobs/${d}`, 'two')).status, 200, d);
    }
  });

  test('bad edits are reported and the previous versions stay', async () => {
    // htpasswd with an MD5 hash, specs that do not parse.
    await writeFile(files.htpasswd, 'alice:$apr1$abcdefgh$0123456789abcdefghijkl\n');
    await writeFile(files.specs, '{"ws": {"baseRef": ');
    facade.proc.kill('SIGHUP');
    await waitFor(async () => (await refused('htpasswd')) === 1, 10_000, { what: 'the refused htpasswd' });
    assert.equal((await get('/v2/', 'two')).status, 200, 'the users before the bad edit stay');

    // The specs before the bad edit stay.
    const m = await get('/v2/fixed/ws/manifests/latest', 'two');
    assert.equal(m.status, 200, m.body.toString());
    const log = await facade.logTail();
    assert.match(log, /fixed specs not reloaded, the previous ones stay/);
    assert.equal(await refused('htpasswd'), 1, 'reported once');

    // Fixed again: the good version applies.
    await writeFile(files.htpasswd, `alice:${bcrypt.hashSync('three', 4)}\n`);
    facade.proc.kill('SIGHUP');
    await waitFor(async () => (await get('/v2/', 'three')).status === 200, 10_000, {
      what: 'the fixed file',
    });
  });
});
