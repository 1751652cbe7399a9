// `strata pull`, `strata images …` and `strata rootfs` as a user runs them: bin/strata against a real
// `strata daemon`, images from a real docker-registry, results checked with containerd's own ctr. Blob
// downloads are counted by a small pass-through proxy in front of the registry (the registry cannot
// tell us), so "a second pull fetches no layer" is observed on the wire. The daemon-facing commands reach
// the daemon at every form of address it listens on: an absolute path, `unix://` in front, and a path
// relative to the working directory (the daemon takes `--address strata.sock` from there, so its clients
// must too), also through STRATA_ADDRESS.
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import { once } from 'node:events';
import { access, lstat, mkdir, readdir, readFile, readlink, writeFile } from 'node:fs/promises';
import { basename, dirname, join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { createGunzip } from 'node:zlib';
import { extract } from 'tar-stream';
import type { DaemonApi } from '../../src/client/daemon-api.ts';
import { GrpcDaemonApi } from '../../src/client/grpc-daemon-api.ts';
import { chainIds } from '../../src/client/pull/chain.ts';
import { pullImage } from '../../src/client/pull/pull.ts';
import type { Digest } from '../../src/oci/digest.ts';
import { parseReference } from '../../src/oci/reference.ts';
import { RegistryClient } from '../../src/registry/client.ts';
import { blobGets, countingProxy } from '../helpers/counting-proxy.ts';
import { startDaemon, type TestDaemon } from '../helpers/daemon.ts';
import {
  type PushedImage,
  type PushedIndex,
  pushFilesImage,
  pushMultiLayer,
  pushTwoPlatformIndex,
  skopeoInspect,
  skopeoRawManifest,
} from '../helpers/images.ts';
import { freePort } from '../helpers/ports.ts';
import { type ProcessResult, runCommand, runProcess, waitFor } from '../helpers/process.ts';
import { startRegistry, type TestRegistry } from '../helpers/registry.ts';
import { removeTempDir, tempDir } from '../helpers/tmp.ts';

const BIN = new URL('../../bin/strata', import.meta.url).pathname;
/** These tests look at what the pull left in the native snapshotter. */
const NATIVE = ['--snapshotter', 'native'];

/** Runs bin/strata with stdout and stderr as pipes (not a terminal); never throws on a non-zero exit. */
function strata(args: string[], timeoutMs = 180_000): Promise<ProcessResult> {
  return runProcess(BIN, args, { timeoutMs });
}

async function strataOk(args: string[]): Promise<string> {
  const r = await strata(args);
  assert.equal(r.code, 0, `strata ${args.join(' ')} failed:\n${r.stderr}\n${r.stdout}`);
  return r.stdout;
}

interface RawManifest {
  config: { digest: Digest; size: number };
  layers: Array<{ digest: Digest; size: number; mediaType: string }>;
}

interface Entry {
  type: string;
  mode: number;
  size?: number;
  sha256?: string;
  link?: string;
}

/** The files an image's layers make, applied in order (these test images have no whiteouts). */
async function expectedTree(repoRef: string, manifest: RawManifest): Promise<Map<string, Entry>> {
  const ref = parseReference(repoRef);
  const client = new RegistryClient();
  const files = new Map<string, Entry>();
  try {
    for (const layer of manifest.layers) {
      const body = await client.fetchBlob(ref, layer);
      const ex = extract();
      ex.on('entry', (h, stream, next) => {
        const name = h.name.replace(/^\.?\//, '').replace(/\/$/, '');
        const hash = createHash('sha256');
        let size = 0;
        stream.on('data', (c: unknown) => {
          const b = c as Buffer;
          hash.update(b);
          size += b.length;
        });
        stream.on('end', () => {
          if (name !== '' && name !== '.') {
            const mode = (h.mode ?? 0) & 0o7777;
            if (h.type === 'file') files.set(name, { type: 'file', mode, size, sha256: hash.digest('hex') });
            else if (h.type === 'directory') files.set(name, { type: 'directory', mode });
            else if (h.type === 'symlink') files.set(name, { type: 'symlink', mode, link: h.linkname ?? '' });
            else files.set(name, { type: h.type ?? 'unknown', mode });
          }
          next();
        });
        stream.resume();
      });
      await new Promise<void>((resolve, reject) => {
        ex.on('finish', resolve);
        ex.on('error', reject);
        body.on('error', reject);
        body.pipe(createGunzip()).on('error', reject).pipe(ex);
      });
    }
  } finally {
    await client.close();
  }
  return files;
}

async function actualTree(
  dir: string,
  rel = '',
  out = new Map<string, Entry>(),
): Promise<Map<string, Entry>> {
  for (const name of await readdir(join(dir, rel))) {
    const path = rel ? `${rel}/${name}` : name;
    const full = join(dir, path);
    const st = await lstat(full);
    const mode = st.mode & 0o7777;
    if (st.isDirectory()) {
      out.set(path, { type: 'directory', mode });
      await actualTree(dir, path, out);
    } else if (st.isSymbolicLink()) out.set(path, { type: 'symlink', mode, link: await readlink(full) });
    else if (st.isFile()) {
      const sha256 = createHash('sha256')
        .update(await readFile(full))
        .digest('hex');
      out.set(path, { type: 'file', mode, size: st.size, sha256 });
    } else out.set(path, { type: 'other', mode });
  }
  return out;
}

describe('strata pull through the daemon', () => {
  let reg: TestRegistry;
  let proxy: Awaited<ReturnType<typeof countingProxy>>;
  let image: PushedImage;
  let index: PushedIndex;
  let ref: string;
  let manifest: RawManifest;
  let diffIds: Digest[];

  before(async () => {
    reg = await startRegistry();
    image = await pushMultiLayer(reg, 'team/app', { layers: 5, layerBytes: 300 * 1024 });
    index = await pushTwoPlatformIndex(reg, 'team/multi');
    proxy = await countingProxy(reg.url);
    ref = `${proxy.host}/team/app:latest`;
    manifest = JSON.parse((await skopeoRawManifest(image.ref)).toString('utf8')) as RawManifest;
    const config = (await skopeoInspect(image.ref, { config: true })) as { rootfs: { diff_ids: Digest[] } };
    diffIds = config.rootfs.diff_ids;
  });
  after(async () => {
    await proxy?.close();
    await reg?.stop();
  });

  const flags = (d: TestDaemon) => ['--address', d.address];
  const layerDigests = () => manifest.layers.map((l) => l.digest);

  test('pulls a multi-layer gzip image complete and unpacked, as ctr sees it, with plain progress lines', async (t) => {
    const daemon = await startDaemon({ t });
    const out = await strataOk(['pull', '--plain-http', ...NATIVE, ...flags(daemon), ref]);

    // Not a terminal: plain lines, one per fetched blob at least, and a summary.
    assert.match(out, /^resolved 127\.0\.0\.1:\d+\/team\/app:latest sha256:[0-9a-f]{64}$/m);
    for (const l of manifest.layers) {
      assert.match(out, new RegExp(`^fetch layer ${l.digest.slice(0, 19)}… \\(`, 'm'));
      assert.match(out, new RegExp(`^done ${l.digest.slice(0, 19)}… in \\d`, 'm'));
    }
    assert.match(out, /^unpacked sha256:[0-9a-f]{12}… in /m);
    assert.match(out, /^image 127\.0\.0\.1:\d+\/team\/app:latest created$/m);
    assert.match(out, /^pulled .* 8 blobs fetched .* 6 layers unpacked, 0 already unpacked$/m);

    const check = await daemon.ctrOk(['images', 'check', '--snapshotter', 'native']);
    const row = check.split('\n').find((l) => l.startsWith(`${ref} `));
    assert.ok(row, check);
    assert.match(row, /complete \(7\/7\)/);
    assert.match(row, /\btrue\s*$/);

    // The chain, bottom to top, each committed on its parent.
    const chain = chainIds(diffIds);
    const snaps = await daemon.ctrOk(['snapshots', '--snapshotter', 'native', 'ls']);
    for (const [i, id] of chain.entries()) {
      const line = snaps.split('\n').find((l) => l.startsWith(`${id} `));
      assert.ok(line, `snapshot ${id} missing:\n${snaps}`);
      if (i > 0) assert.match(line, new RegExp(`^${id}\\s+${chain[i - 1]}\\s+Committed`));
      else assert.match(line, new RegExp(`^${id}\\s+Committed`));
    }

    // containerd's labels, so its GC and tools read the result as their own.
    const api = GrpcDaemonApi.connect(daemon.address);
    t.after(() => api.close());
    const m = await api.contentInfo(image.digest);
    assert.equal(m?.labels['containerd.io/gc.ref.content.config'], manifest.config.digest);
    for (const [i, l] of manifest.layers.entries()) {
      assert.equal(m?.labels[`containerd.io/gc.ref.content.l.${i}`], l.digest);
      const info = await api.contentInfo(l.digest);
      assert.equal(info?.labels['containerd.io/uncompressed'], diffIds[i]);
      assert.equal(info?.labels['containerd.io/distribution.source.127.0.0.1'], 'team/app');
    }
    const cfg = await api.contentInfo(manifest.config.digest);
    assert.equal(cfg?.labels['containerd.io/gc.ref.snapshot.native'], chain.at(-1));
    // The pull's lease is gone; what it made is held by the image alone.
    assert.deepEqual(await daemon.ctrOk(['leases', 'ls', '-q']), '');

    const ls = await strataOk(['images', 'ls', ...flags(daemon)]);
    assert.match(ls, /^REF\s+TYPE\s+DIGEST\s+SIZE\s+PLATFORMS\s+LABELS$/m);
    assert.match(
      ls,
      new RegExp(
        `^${ref.replaceAll('.', '\\.')}\\s+\\S+\\s+${image.digest}\\s+\\S+ [KM]iB\\s+linux/amd64\\s+-$`,
        'm',
      ),
    );
    const mine = await strataOk(['images', 'check', ...NATIVE, ...flags(daemon)]);
    assert.match(mine, /complete \(7\/7\)\s+\S+ [KM]iB\/\S+ [KM]iB\s+true$/m);
  });

  test('a registry serving wrong bytes for a layer fails the pull, and leaves no blob and no scratch snapshot', async (t) => {
    const victim = manifest.layers[1]!.digest;
    const liar = await countingProxy(reg.url, { lieAbout: victim });
    t.after(() => liar.close());
    const daemon = await startDaemon({ t });
    const r = await strata(['pull', ...NATIVE, ...flags(daemon), `${liar.host}/team/app:latest`]);
    assert.notEqual(r.code, 0, r.stdout);
    assert.match(r.stderr, new RegExp(`${victim}`));
    assert.equal(blobGets(liar.seen, [victim]).length, 1);
    // The daemon's commit refused the bytes: the blob is not there, and the snapshot prepared for that
    // layer while it downloaded (and every other extract-… key) is gone with the failed pull.
    const content = await daemon.ctrOk(['content', 'ls', '-q']);
    assert.ok(!content.includes(victim), content);
    const snaps = await daemon.ctrOk(['snapshots', '--snapshotter', 'native', 'ls']);
    assert.doesNotMatch(snaps, /extract-/);
    assert.doesNotMatch(snaps, /Active/);
    assert.deepEqual(await daemon.ctrOk(['leases', 'ls', '-q']), '');
  });

  test('a snapshotter the daemon has not loaded is refused before anything is fetched', async (t) => {
    const proxy = await countingProxy(reg.url);
    t.after(() => proxy.close());
    const daemon = await startDaemon({ t });
    const r = await strata([
      'pull',
      '--snapshotter',
      'nope',
      ...flags(daemon),
      `${proxy.host}/team/app:latest`,
    ]);
    assert.notEqual(r.code, 0, r.stdout);
    assert.match(r.stderr, /^strata pull: .*snapshotter not loaded: nope/);
    assert.deepEqual(proxy.seen, [], 'nothing asked of the registry');
  });

  test('a second pull transfers no blob and applies no layer', async (t) => {
    const daemon = await startDaemon({ t });
    await strataOk(['pull', ...NATIVE, ...flags(daemon), ref]);
    const mark = proxy.seen.length;
    const out = await strataOk(['pull', ...NATIVE, ...flags(daemon), ref]);
    const again = proxy.seen.slice(mark);
    assert.deepEqual(blobGets(again, [...layerDigests(), manifest.config.digest]), []);
    assert.ok(
      again.every((s) => !s.path.includes('/blobs/')),
      JSON.stringify(again),
    );
    assert.match(out, /0 blobs fetched .* 0 layers unpacked, 6 already unpacked$/m);
    assert.match(out, /^exists layer sha256:/m);
    assert.match(out, /^image .* updated$/m);
  });

  test('after one layer is deleted from content, a pull fetches that one alone', async (t) => {
    const daemon = await startDaemon({ t });
    await strataOk(['pull', ...NATIVE, ...flags(daemon), ref]);
    // A second namespace holds the same blobs, so removing one from `default` leaves its bytes on disk.
    await strataOk(['pull', ...NATIVE, ...flags(daemon), '--namespace', 'keep', ref]);
    const victim = manifest.layers[3]!.digest;
    const victimFile = join(daemon.root, 'content', 'blobs', 'sha256', victim.slice(7));
    const all = [...layerDigests(), manifest.config.digest];
    const check = () => daemon.ctrOk(['images', 'check', '--snapshotter', 'native']);

    // While the bytes are still on disk, the namespace gets them back without a download (containerd's
    // shared-content policy).
    await daemon.ctrOk(['content', 'rm', victim]);
    assert.match(await check(), /incomplete \(6\/7\)/);
    let mark = proxy.seen.length;
    await strataOk(['pull', ...NATIVE, ...flags(daemon), ref]);
    assert.deepEqual(blobGets(proxy.seen.slice(mark), all), []);
    assert.match(await check(), /complete \(7\/7\)/);

    // Bytes gone too: with the other namespace's image gone, `content rm` drops the layer's last holder
    // and the next collection (made synchronous by removing a lease with --sync) deletes its file; that
    // layer, and only it, comes over the network again.
    await daemon.ctrOk(['images', 'rm', '--sync', ref], { namespace: 'keep' });
    await access(victimFile);
    await daemon.ctrOk(['content', 'rm', victim]);
    await daemon.ctrOk(['leases', 'create', '--id', 'gc-now']);
    await daemon.ctrOk(['leases', 'rm', '--sync', 'gc-now']);
    await assert.rejects(access(victimFile), { code: 'ENOENT' });
    mark = proxy.seen.length;
    const out = await strataOk(['pull', ...NATIVE, ...flags(daemon), ref]);
    const gets = blobGets(proxy.seen.slice(mark), all);
    assert.deepEqual(
      gets.map((g) => g.path.slice(g.path.lastIndexOf('/') + 1)),
      [victim],
    );
    assert.match(out, /^pulled .* 1 blobs fetched .* 0 layers unpacked, 6 already unpacked$/m);
    assert.match(await check(), /complete \(7\/7\)/);
  });

  test('an interrupted ingest is resumed from its offset with a Range request', async (t) => {
    const daemon = await startDaemon({ t });
    const layer = manifest.layers[2]!;
    const client = new RegistryClient();
    t.after(() => client.close());
    const whole = Buffer.concat(await (await client.fetchBlob(parseReference(image.ref), layer)).toArray());
    const part = 100_000;
    const api = GrpcDaemonApi.connect(daemon.address);
    t.after(() => api.close());
    const w = await api.openWriter(`layer-${layer.digest}`, { digest: layer.digest, size: layer.size });
    assert.ok(w);
    await w.write(whole.subarray(0, part));
    await w.flush();
    w.close();

    const mark = proxy.seen.length;
    const out = await strataOk(['pull', ...NATIVE, ...flags(daemon), ref]);
    const gets = blobGets(proxy.seen.slice(mark), [layer.digest]);
    assert.equal(gets.length, 1);
    assert.equal(gets[0]!.range, `bytes=${part}-${layer.size - 1}`);
    assert.match(
      out,
      new RegExp(`^fetch layer ${layer.digest.slice(0, 19)}… \\(\\S+ KiB, resuming at 97\\.7 KiB\\)$`, 'm'),
    );
    assert.match(await daemon.ctrOk(['images', 'check', '--snapshotter', 'native']), /complete \(7\/7\)/);
  });

  test('a pull waits for a layer another pull is writing, however long, and takes it from there', async (t) => {
    const daemon = await startDaemon({ t });
    const layer = manifest.layers[1]!;
    const client = new RegistryClient();
    t.after(() => client.close());
    const whole = Buffer.concat(await (await client.fetchBlob(parseReference(image.ref), layer)).toArray());
    const api = GrpcDaemonApi.connect(daemon.address);
    t.after(() => api.close());
    // The other pull: holds the layer's ingest (its lock) with part of the blob written.
    const w = await api.openWriter(`layer-${layer.digest}`, { digest: layer.digest, size: layer.size });
    assert.ok(w);
    await w.write(whole.subarray(0, 100_000));
    await w.flush();

    const mark = proxy.seen.length;
    const pull = strata(['pull', ...NATIVE, ...flags(daemon), ref]);
    // Held past the dozen retries (about 12 s at most) a pull used to give up after: a slow download.
    const early = await Promise.race([
      pull.then(() => true),
      new Promise<false>((r) => setTimeout(() => r(false), 20_000)),
    ]);
    await w.write(whole.subarray(100_000));
    assert.equal(await w.commit(), 'committed');
    const r = await pull;
    assert.equal(r.code, 0, `the pull ${early ? 'ended while the ingest was held' : 'failed'}:\n${r.stderr}`);
    assert.deepEqual(blobGets(proxy.seen.slice(mark), [layer.digest]), []);
    assert.match(await daemon.ctrOk(['images', 'check', '--snapshotter', 'native']), /complete \(7\/7\)/);
  });

  test('Ctrl-C mid-pull: exit 130, no image, no scratch snapshot, no lease', async (t) => {
    const daemon = await startDaemon({ t });
    const slow = await countingProxy(reg.url, { bytesPerSecond: 64 * 1024 });
    t.after(() => slow.close());
    const child = spawn(BIN, ['pull', ...NATIVE, ...flags(daemon), `${slow.host}/team/app:latest`], {
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let stdout = '';
    let stderr = '';
    child.stdout.setEncoding('utf8').on('data', (s: string) => (stdout += s));
    child.stderr.setEncoding('utf8').on('data', (s: string) => (stderr += s));
    const exited = once(child, 'exit') as Promise<[number | null, NodeJS.Signals | null]>;
    // Interrupted while the big first layer is still downloading (others are done: 4 × 300 KiB vs 1.1 MiB).
    await waitFor(() => (stdout.match(/^done /gm) ?? []).length >= 4, 60_000, {
      what: 'small blobs fetched',
    });
    // Mid-download, the process bin/strata became runs WebAssembly (undici's parser) on the baseline
    // compiler alone, so no first large download pays for an optimizing recompile of it.
    const args = (await readFile(`/proc/${child.pid}/cmdline`, 'utf8')).split('\0');
    assert.ok(
      args.includes('--no-wasm-dynamic-tiering') && args.includes('--no-wasm-tier-up'),
      args.join(' '),
    );
    child.kill('SIGINT');
    const [code] = await exited;
    assert.equal(code, 130, stdout);
    // What happened, not an internal step it cut short ('walk aborted', 'apply layer …: Cancelled').
    assert.equal(stderr, 'strata pull: interrupted\n');
    assert.equal(await daemon.ctrOk(['images', 'ls', '-q']), '');
    assert.doesNotMatch(await daemon.ctrOk(['snapshots', '--snapshotter', 'native', 'ls']), /extract-/);
    assert.equal((await daemon.ctrOk(['leases', 'ls', '-q'])).trim(), '');
  });

  test('blobs the namespace has are held by the pull: removing the image that held them does not break it', async (t) => {
    const daemon = await startDaemon({ t });
    // Name A holds every blob (fetched only); the pull of name B, same manifest, unpacks.
    await strataOk(['pull', '--no-unpack', ...flags(daemon), ref]);
    const api = GrpcDaemonApi.connect(daemon.address);
    const registry = new RegistryClient();
    t.after(async () => {
      api.close();
      await registry.close();
    });
    let removed = false;
    // The daemon's API as the pull sees it, but name A is removed (and garbage collected) the moment
    // the unpack starts, as another user's `ctr images rm --sync` could be.
    const racing = (inner: DaemonApi): DaemonApi =>
      new Proxy(inner, {
        get(target, prop, receiver) {
          const value = Reflect.get(target, prop, receiver) as unknown;
          if (typeof value !== 'function') return value;
          if (prop === 'withLease') return (id: string) => racing(target.withLease(id));
          if (prop === 'prepareSnapshot' && !removed) {
            return async (...args: Parameters<DaemonApi['prepareSnapshot']>) => {
              removed = true;
              await daemon.ctrOk(['images', 'rm', '--sync', ref]);
              return target.prepareSnapshot(...args);
            };
          }
          return value.bind(target);
        },
      });
    const nameB = `${proxy.host}/team/app@${image.digest}`;
    await pullImage(registry, racing(api), nameB, { snapshotter: 'native' });
    assert.ok(removed);
    assert.match(
      await daemon.ctrOk(['images', 'check', '--snapshotter', 'native']),
      /complete \(7\/7\).*true/,
    );
  });

  test('strata rootfs exports exactly the files of the image', async (t) => {
    const daemon = await startDaemon({ t });
    await strataOk(['pull', ...NATIVE, ...flags(daemon), ref]);
    const dir = await tempDir('rootfs');
    t.after(() => removeTempDir(dir));
    const target = join(dir, 'out');
    await strataOk(['rootfs', ...NATIVE, ...flags(daemon), ref, target]);
    const want = await expectedTree(image.ref, manifest);
    const got = await actualTree(target);
    for (const [path, entry] of want) assert.deepEqual(got.get(path), entry, path);
    for (const [path, entry] of got) {
      if (want.has(path)) continue;
      // Parents a layer implies without listing them are made 0755 by the applier.
      assert.equal(entry.type, 'directory', `unexpected ${path}`);
      assert.ok(
        [...want.keys()].some((p) => p.startsWith(`${path}/`)),
        `unexpected ${path}`,
      );
    }
    assert.ok(got.get('bin/busybox')?.size, 'busybox is there');
    assert.equal(got.get('bin/sh')?.link, 'busybox');

    // Not empty now: refused rather than mixed.
    const again = await strata(['rootfs', ...NATIVE, ...flags(daemon), ref, target]);
    assert.notEqual(again.code, 0);
    assert.match(again.stderr, /is not empty/);
  });

  test('Ctrl-C mid-rootfs: the copy stops, the view it copied from is removed, exit 130', async (t) => {
    const daemon = await startDaemon({ t });
    await strataOk(['pull', ...NATIVE, ...flags(daemon), ref]);
    const dir = await tempDir('rootfs-int');
    t.after(() => removeTempDir(dir));
    // A cp that stops itself before copying: the signal comes while the copy is under way, however small
    // the image.
    const bin = join(dir, 'bin');
    await mkdir(bin);
    await writeFile(join(bin, 'cp'), '#!/bin/sh\nkill -STOP $$\nexec /bin/cp "$@"\n', { mode: 0o755 });
    const child = spawn(BIN, ['rootfs', ...NATIVE, ...flags(daemon), ref, join(dir, 'out')], {
      stdio: ['ignore', 'pipe', 'pipe'],
      env: { ...process.env, PATH: `${bin}:${process.env.PATH}` },
    });
    t.after(() => child.kill('SIGKILL'));
    let stderr = '';
    child.stderr.setEncoding('utf8').on('data', (s: string) => (stderr += s));
    const exited = once(child, 'exit') as Promise<[number | null, NodeJS.Signals | null]>;
    const cp = await waitFor(
      async () => {
        const pid = Number((await runProcess('pgrep', ['-P', String(child.pid), '-x', 'cp'])).stdout.trim());
        if (!(pid > 1)) return undefined;
        // Field 3 of /proc/PID/stat, after the parenthesized name: T once it has stopped itself.
        const stat = await readFile(`/proc/${pid}/stat`, 'utf8');
        return stat.slice(stat.lastIndexOf(')') + 2).startsWith('T') ? pid : undefined;
      },
      60_000,
      { what: 'the copy started' },
    );
    t.after(() => {
      try {
        process.kill(cp, 'SIGKILL');
      } catch {
        // Gone already: the interrupted rootfs ended it.
      }
    });
    child.kill('SIGINT');
    const [code] = await exited;
    assert.equal(code, 130);
    assert.equal(stderr, 'strata rootfs: interrupted\n');
    assert.doesNotMatch(
      await daemon.ctrOk(['snapshots', '--snapshotter', 'native', 'ls']),
      /rootfs-export-/,
      'no view left behind',
    );
  });

  test('an index: the host platform by default, another on request, gc.ref labels for every child', async (t) => {
    const daemon = await startDaemon({ t });
    const idxRef = `${proxy.host}/team/multi:latest`;
    await strataOk(['pull', ...NATIVE, ...flags(daemon), idxRef]);
    const api = GrpcDaemonApi.connect(daemon.address);
    t.after(() => api.close());
    const info = await api.contentInfo(index.digest);
    assert.equal(info?.labels['containerd.io/gc.ref.content.m.0'], index.manifests[0]!.digest);
    assert.equal(info?.labels['containerd.io/gc.ref.content.m.1'], index.manifests[1]!.digest);
    assert.equal(await api.contentInfo(index.manifests[1]!.digest), undefined, 'arm64 manifest not fetched');
    const check = await daemon.ctrOk(['images', 'check', '--snapshotter', 'native']);
    assert.match(check, /complete \(3\/3\).*true/);
    const ls = await strataOk(['images', 'ls', ...flags(daemon)]);
    assert.match(ls, /linux\/amd64,linux\/arm64/);

    await strataOk(['pull', '--platform', 'linux/arm64', ...NATIVE, ...flags(daemon), idxRef]);
    assert.ok(await api.contentInfo(index.manifests[1]!.digest), 'arm64 manifest fetched');
    const arm = await strataOk(['images', 'check', '--platform', 'linux/arm64', ...NATIVE, ...flags(daemon)]);
    assert.match(arm, /complete \(3\/3\).*true$/m);
  });

  test('an image of no layers (FROM scratch and metadata) pulls as ctr pulls it', async (t) => {
    const daemon = await startDaemon({ t });
    const empty = await pushFilesImage(reg, 'team/empty', { layers: [], labels: { only: 'metadata' } });
    const emptyRef = `${proxy.host}/team/empty:latest`;
    const ctr = await daemon.ctr(['-n', 'by-ctr', 'images', 'pull', '--plain-http', ...NATIVE, emptyRef]);
    assert.equal(ctr.code, 0, ctr.stderr);
    const r = await strata(['pull', ...NATIVE, ...flags(daemon), emptyRef]);
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, /0 layers unpacked, 0 already unpacked$/m);
    assert.match(await daemon.ctrOk(['images', 'check', '--snapshotter', 'native']), /complete \(1\/1\)/);
    const api = GrpcDaemonApi.connect(daemon.address);
    t.after(() => api.close());
    assert.equal((await api.getImage(emptyRef))?.target.digest, empty.digest);
    // Its rootfs is empty.
    const dir = await tempDir('empty-rootfs');
    t.after(() => removeTempDir(dir));
    await strataOk(['rootfs', ...NATIVE, ...flags(daemon), emptyRef, dir]);
    assert.deepEqual(await readdir(dir), []);
  });

  test('images label, ls filters and rm', async (t) => {
    const daemon = await startDaemon({ t });
    await strataOk(['pull', ...NATIVE, ...flags(daemon), ref]);
    assert.equal(
      await strataOk(['images', 'label', ...flags(daemon), ref, 'team=x', 'flag']),
      'flag=true,team=x\n',
    );
    assert.equal(await strataOk(['images', 'label', ...flags(daemon), ref, 'flag=']), 'team=x\n');
    assert.match(await daemon.ctrOk(['images', 'ls']), /team=x/);
    assert.equal(await strataOk(['images', 'ls', '-q', ...flags(daemon), 'labels.team==x']), `${ref}\n`);
    assert.equal(await strataOk(['images', 'ls', '-q', ...flags(daemon), 'labels.team==y']), '');
    assert.equal(await strataOk(['images', 'label', '-r', ...flags(daemon), ref, 'only=1']), 'only=1\n');

    assert.equal(await strataOk(['images', 'rm', '--sync', ...flags(daemon), ref]), `${ref}\n`);
    assert.equal(await strataOk(['images', 'ls', '-q', ...flags(daemon)]), '');
    const missing = await strata(['images', 'rm', ...flags(daemon), ref]);
    assert.equal(missing.code, 0);
    assert.match(missing.stderr, /image not found/);
  });

  test('bad input fails clearly with a non-zero exit', async (t) => {
    const daemon = await startDaemon({ t });
    const cases: [string[], RegExp][] = [
      [['pull', ...NATIVE, ...flags(daemon), 'Not//A:Ref::'], /invalid reference/i],
      [['pull', ...NATIVE, ...flags(daemon), '--platform', 'linux/amd64/v9/extra', ref], /invalid platform/],
      [
        ['pull', ...NATIVE, ...flags(daemon), '--platform', 'linux/s390x', `${proxy.host}/team/multi:latest`],
        /no match for platform in manifest sha256:[0-9a-f]{64}: not found/,
      ],
      [
        ['pull', ...NATIVE, ...flags(daemon), `${proxy.host}/team/nope:latest`],
        /team\/nope:latest: not found$/m,
      ],
      [['pull', ...NATIVE, ...flags(daemon), '--concurrency', '0', ref], /--concurrency/],
      [['pull', '--address', join(daemon.root, 'no.sock'), ref], /unavailable|connect|No connection/i],
      [
        ['rootfs', ...NATIVE, ...flags(daemon), `${proxy.host}/team/never:latest`, join(daemon.root, 'x')],
        /not found/,
      ],
      [['images', 'label', ...flags(daemon), 'no/such:image', 'a=b'], /not found/],
    ];
    for (const [args, want] of cases) {
      const r = await strata(args);
      assert.notEqual(r.code, 0, `strata ${args.join(' ')} succeeded`);
      assert.match(r.stderr, want, `strata ${args.join(' ')}: ${r.stderr}`);
    }

    // Registry down: a port nobody listens on.
    const down = await strata([
      'pull',
      ...NATIVE,
      ...flags(daemon),
      `127.0.0.1:${await freePort()}/team/app:latest`,
    ]);
    assert.notEqual(down.code, 0);
    assert.match(down.stderr, /^strata pull: .*(ECONNREFUSED|connect|unavailable)/im);
    // Nothing half-made was left behind as an image.
    assert.equal(await strataOk(['images', 'ls', '-q', ...flags(daemon)]), '');
  });
});

test('strata images ls reaches the daemon by absolute, unix:// and relative socket paths', async (t) => {
  const d = await startDaemon({ t });
  const cwd = dirname(d.address);
  const ls = (address: string, env: Record<string, string> = {}) =>
    runCommand(BIN, ['images', 'ls', '-q', ...(address ? ['--address', address] : [])], { cwd, env });
  for (const address of [d.address, `unix://${d.address}`, basename(d.address), `./${basename(d.address)}`]) {
    assert.equal(await ls(address), '', address);
  }
  assert.equal(await ls('', { STRATA_ADDRESS: basename(d.address) }), '', 'STRATA_ADDRESS');
});

test('a registry that wants credentials: strata pull says so, names the host and where it reads them', async (t) => {
  const daemon = await startDaemon({ t });
  for (const mode of ['basic', 'token'] as const) {
    const reg = await startRegistry({ t, auth: { mode, users: { alice: 'wonderland' } } });
    await pushMultiLayer(reg, 'team/app', { layers: 5, layerBytes: 1024 });
    const ref = `${reg.host}/team/app:latest`;
    const host = reg.host.replaceAll('.', '\\.');
    const configs = await tempDir('pull-docker-config');
    t.after(() => removeTempDir(configs));
    const pullWith = async (name: string, auths: Record<string, { auth: string }>) => {
      const dir = join(configs, name);
      await mkdir(dir);
      await writeFile(join(dir, 'config.json'), JSON.stringify({ auths }));
      const r = await runProcess(BIN, ['pull', '--plain-http', ...NATIVE, '--address', daemon.address, ref], {
        env: { ...process.env, DOCKER_CONFIG: dir },
        timeoutMs: 120_000,
      });
      return { ...r, dir: dir.replaceAll('.', '\\.') };
    };
    const hint = (dir: string) =>
      `\\. strata pull reads credentials from ${dir}/config\\.json \\(auths, credHelpers or credsStore\\), as \`docker login ${host}\` writes them; DOCKER_CONFIG names another directory\n$`;

    const none = await pullWith(`${mode}-none`, {});
    assert.equal(none.code, 1, none.stderr);
    assert.match(
      none.stderr,
      new RegExp(
        `^strata pull: .*: ${host} asks for credentials, and none are configured for it; .*401.*${hint(none.dir)}`,
      ),
    );
    const b64 = (s: string) => Buffer.from(s).toString('base64');
    const wrong = await pullWith(`${mode}-wrong`, { [reg.host]: { auth: b64('alice:nope') } });
    assert.equal(wrong.code, 1, wrong.stderr);
    assert.match(
      wrong.stderr,
      new RegExp(
        `^strata pull: .*: ${host} refused the credentials configured for it .*401.*${hint(wrong.dir)}`,
      ),
    );
    const right = await pullWith(`${mode}-right`, { [reg.host]: { auth: b64('alice:wonderland') } });
    assert.equal(right.code, 0, right.stderr);
  }
});
