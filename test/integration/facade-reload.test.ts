// Hot reload of a real `strata facade` process (file watch, and SIGHUP for at once): fixed specs and the
// htpasswd file change without a restart; a bad edit of each is logged (and counted), and the previous
// version stays in use; a manifest composed before a reload stays pullable by digest, blobs too. Then a
// facade that reloads on SIGHUP alone, with every kind of reloadable file (below).
import assert from 'node:assert/strict';
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { gzipSync } from 'node:zlib';
import bcrypt from 'bcryptjs';
import { Agent, request } from 'undici';
import { sha256, tarOf } from '../helpers/content-host.ts';
import { spawnFacade } from '../helpers/facade.ts';
import { type PushedImage, pushBusybox, pushFilesImage } from '../helpers/images.ts';
import { freePort } from '../helpers/ports.ts';
import { type ServerProcess, spawnServer, waitFor } from '../helpers/process.ts';
import { startRegistry, type TestRegistry } from '../helpers/registry.ts';
import { makeSelfSignedCert, servedCommonName } from '../helpers/tls-cert.ts';
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
    facade = await spawnFacade({ config, url, logFile: join(work, 'facade.log') });
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

// SIGHUP alone: `watchFiles: false` turns the watchers and the checks on use off (as an operator on a file
// system without working change notification would), so only the signal can apply an edit. Every kind of
// reloadable file changes: fixed specs, docker auth (the upstream credentials), htpasswd, the TLS
// certificate and a static layer file. Then bad edits of each are reported and the previous versions stay.
describe('facade reload on SIGHUP alone', () => {
  let open: TestRegistry;
  let locked: TestRegistry;
  let busybox: PushedImage;
  let lockedIde: Awaited<ReturnType<typeof pushFilesImage>>;
  let work: string;
  let facade: ServerProcess;
  let port: number;
  const agent = new Agent({ connect: { rejectUnauthorized: false } });
  const f = { specs: '', htpasswd: '', dockerAuth: '', cert: '', key: '', layer: '' };
  let v1: Buffer;
  let v2: Buffer;

  const dockerAuthFor = (password: string) =>
    JSON.stringify({
      auths: { [locked.host]: { auth: Buffer.from(`bob:${password}`).toString('base64') } },
    });
  const makeCert = (cn: string) =>
    makeSelfSignedCert({ keyFile: f.key, certFile: f.cert, cn, ip: '127.0.0.1', days: 2 });

  before(async () => {
    work = await tempDir('facade-sighup');
    open = await startRegistry();
    locked = await startRegistry({ auth: { mode: 'basic', users: { bob: 'builder' } } });
    busybox = await pushBusybox(open, 'base/busybox');
    lockedIde = await pushFilesImage(locked, 'ide/code', { layers: [{ 'ide/bin/marker': 'locked' }] });
    for (const k of Object.keys(f) as (keyof typeof f)[]) f[k] = join(work, k);
    v1 = gzipSync(await tarOf({ 'static/marker': 'one\n' }));
    v2 = gzipSync(await tarOf({ 'static/marker': 'two\n' }));
    await writeFile(f.layer, v1);
    await writeFile(
      f.specs,
      JSON.stringify({ ws: { baseRef: busybox.ref }, locked: { baseRef: lockedIde.ref } }),
    );
    await writeFile(f.htpasswd, `alice:${bcrypt.hashSync('one', 4)}\n`);
    await writeFile(f.dockerAuth, dockerAuthFor('wrong'));
    await makeCert('first');
    port = await freePort();
    const config = join(work, 'facade.yaml');
    await writeFile(
      config,
      JSON.stringify({
        listen: `127.0.0.1:${port}`,
        watchFiles: false,
        specProviders: { fixedFile: f.specs },
        staticLayers: [{ file: f.layer }],
        dockerAuth: f.dockerAuth,
        auth: { htpasswd: f.htpasswd },
        tls: { cert: f.cert, key: f.key },
        plainHttpHosts: [open.host, locked.host],
        cache: { dir: join(work, 'cache') },
      }),
    );
    facade = await spawnServer(STRATA, ['facade', '--config', config], {
      name: 'strata facade',
      logFile: join(work, 'facade.log'),
      readyCheck: async () => (await get('/readyz', '')).status === 200,
    });
  });

  after(async () => {
    await facade?.stop();
    await agent.close();
    await open?.stop();
    await locked?.stop();
    if (work) await removeTempDir(work);
  });

  async function get(path: string, password: string) {
    const res = await request(`https://127.0.0.1:${port}${path}`, {
      dispatcher: agent,
      headers: {
        accept: ACCEPT,
        ...(password === ''
          ? {}
          : { authorization: `Basic ${Buffer.from(`alice:${password}`).toString('base64')}` }),
      },
      headersTimeout: 30_000,
      bodyTimeout: 30_000,
    });
    const body = Buffer.from(await res.body.arrayBuffer());
    const digest = res.headers['docker-content-digest'];
    return { status: res.statusCode, body, digest: typeof digest === 'string' ? digest : '' };
  }

  const servedCn = () => servedCommonName(port);

  async function counter(name: string, labels: string): Promise<number> {
    const text = (await get('/metrics', '')).body.toString().split('\n');
    const line = text.find((l) => l.startsWith(`${name}{${labels}} `));
    return line ? Number(line.split(' ').pop()) : 0;
  }

  /** What the facade serves now, by the kinds of file it reloads. */
  async function state(password: string) {
    const ws = await get('/v2/fixed/ws/manifests/latest', password);
    const manifest =
      ws.status === 200 ? (JSON.parse(ws.body.toString()) as { layers: { digest: string }[] }) : undefined;
    return {
      ws,
      layers: manifest?.layers.map((l) => l.digest) ?? [],
      locked: (await get('/v2/fixed/locked/manifests/latest', password)).status,
      cn: await servedCn(),
    };
  }

  test('edits apply on SIGHUP only; a manifest composed before stays pullable by digest, its static layer too', async () => {
    const before = await state('one');
    assert.equal(before.ws.status, 200);
    assert.equal(before.layers.at(-1), sha256(v1), 'the static layer comes last');
    assert.notEqual(before.locked, 200, 'the wrong upstream password keeps the locked image out');
    assert.equal(before.cn, 'first');

    await writeFile(
      f.specs,
      JSON.stringify({
        ws: { baseRef: busybox.ref, ideRef: lockedIde.ref },
        locked: { baseRef: lockedIde.ref },
      }),
    );
    await writeFile(f.dockerAuth, dockerAuthFor('builder'));
    await writeFile(f.htpasswd, `alice:${bcrypt.hashSync('two', 4)}\n`);
    await writeFile(f.layer, v2);
    await makeCert('second');
    // Nothing watches or checks on use: the requests right after the edits (which would read a changed
    // fixed-spec or docker auth file on use), and those a watcher would have had time to act before, see
    // the old versions. (Time to act is this loop's few seconds; no watcher takes that long on loopback.)
    const until = Date.now() + 3000;
    while (Date.now() < until) {
      const now = await state('one');
      assert.equal(now.ws.digest, before.ws.digest);
      assert.notEqual(now.locked, 200);
      assert.equal(now.cn, 'first');
    }
    assert.equal(await counter('strata_facade_reloads_total', 'what="htpasswd",result="ok"'), 0);

    facade.proc.kill('SIGHUP');
    await waitFor(async () => (await get('/v2/', 'two')).status === 200, 20_000, {
      what: 'the new password',
    });
    assert.equal((await get('/v2/', 'one')).status, 401);
    const after = await waitFor(
      async () => {
        const s = await state('two');
        return s.ws.status === 200 && s.ws.digest !== before.ws.digest && s.cn === 'second' ? s : undefined;
      },
      20_000,
      { what: 'the new spec, static layer and certificate' },
    );
    assert.equal(after.locked, 200, 'the upstream credentials were reloaded');
    assert.equal(after.layers.at(-2), sha256(v2), 'the new static layer, before the IDE’s');
    assert.ok(after.layers.includes(lockedIde.layerDescriptors[0]!.digest), 'the IDE layer is added');
    for (const what of ['docker-auth', 'htpasswd', 'tls', 'static-layer']) {
      assert.equal(await counter('strata_facade_reloads_total', `what="${what}",result="ok"`), 1, what);
    }

    const old = await get(`/v2/fixed/ws/manifests/${before.ws.digest}`, 'two');
    assert.equal(old.status, 200);
    assert.ok(old.body.equals(before.ws.body), 'the same bytes as before the reload');
    const oldLayer = await get(`/v2/fixed/ws/blobs/${sha256(v1)}`, 'two');
    assert.equal(oldLayer.status, 200);
    assert.ok(oldLayer.body.equals(v1), 'the old static layer, byte for byte');
    const newLayer = await get(`/v2/fixed/ws/blobs/${sha256(v2)}`, 'two');
    assert.ok(newLayer.body.equals(v2));
  });

  test('bad edits of every file are reported on SIGHUP and the previous versions stay', async () => {
    const before = await state('two');
    await writeFile(f.specs, '{"ws": {"baseRef": ');
    await writeFile(f.dockerAuth, '{"auths": ');
    await writeFile(f.htpasswd, 'alice:$apr1$abcdefgh$0123456789abcdefghijkl\n');
    await writeFile(f.layer, 'not a gzip file');
    await writeFile(f.cert, 'not a certificate');
    facade.proc.kill('SIGHUP');
    await waitFor(
      async () => {
        for (const what of ['docker-auth', 'htpasswd', 'tls', 'static-layer']) {
          if ((await counter('strata_facade_reloads_total', `what="${what}",result="refused"`)) !== 1)
            return false;
        }
        return (await counter('strata_facade_fixed_spec_loads_total', 'result="refused"')) === 1;
      },
      20_000,
      { what: 'every bad edit to be refused' },
    );
    const now = await state('two');
    assert.equal(now.ws.digest, before.ws.digest, 'the same specs and static layer');
    assert.equal(now.locked, 200, 'the same upstream credentials');
    assert.equal(now.cn, 'second');
    const log = await facade.logTail();
    for (const re of [
      /fixed specs not reloaded, the previous ones stay/,
      /static-layer not reloaded, the previous version stays/,
      /docker-auth not reloaded, the previous version stays/,
      /not a gzip file/,
    ]) {
      assert.match(log, re);
    }
  });
});
