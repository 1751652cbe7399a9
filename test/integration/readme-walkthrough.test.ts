// The README's walkthrough, run as it is written: its fenced shell blocks, in order, in one bash, against
// a `strata up` and a containerd of this test's own. Only the environment differs from a reader's: the
// addresses the walkthrough takes from variables (STRATA_REGISTRY, STRATA_BUILDER, STRATA_SPEC_STORE,
// containerd's CONTAINERD_ADDRESS) point at this test's servers, and buildah keeps its storage in a temp dir.
// Then the Daemon and Facade sections' blocks, which a reader runs next on the walkthrough's images, with
// the addresses and paths they print (the default socket, ports 5000 and 5050, /mnt, /tmp/specs) swapped
// for this test's own.
import assert from 'node:assert/strict';
import { readFile, stat, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { test } from 'node:test';
import { startContainerd } from '../helpers/containerd.ts';
import { freePort } from '../helpers/ports.ts';
import { runCommand, runProcess, spawnServer } from '../helpers/process.ts';
import { removeTempDir, tempDir } from '../helpers/tmp.ts';

const ROOT = new URL('../../', import.meta.url).pathname;
const STRATA = join(ROOT, 'bin/strata');

/** The fenced `sh` blocks of the README section `## <heading>`, in order. */
function shellBlocks(readme: string, heading: string): string[] {
  const lines = readme.split('\n');
  const start = lines.indexOf(`## ${heading}`);
  if (start < 0) throw new Error(`README.md has no section "## ${heading}"`);
  const end = lines.findIndex((l, i) => i > start && l.startsWith('## '));
  const blocks: string[] = [];
  let open: string[] | undefined;
  for (const line of lines.slice(start + 1, end < 0 ? undefined : end)) {
    if (open === undefined && line === '```sh') open = [];
    else if (open !== undefined && line === '```') {
      blocks.push(open.join('\n'));
      open = undefined;
    } else open?.push(line);
  }
  return blocks;
}

/** `block` with each printed address or path swapped for this test's own. */
function swapped(block: string, swaps: ReadonlyArray<readonly [string, string]>): string {
  return swaps.reduce((text, [printed, own]) => text.replaceAll(printed, own), block);
}

test('the README walkthrough works as written', { timeout: 900_000 }, async (t) => {
  const blocks = shellBlocks(await readFile(join(ROOT, 'README.md'), 'utf8'), 'Walkthrough');
  assert.ok(blocks.length >= 3, 'the walkthrough has its shell blocks');

  const work = await tempDir('walkthrough');
  t.after(() => removeTempDir(work));
  const [registry, metrics, specs, builder] = [
    await freePort(),
    await freePort(),
    await freePort(),
    await freePort(),
  ];
  const config = join(work, 'up.yaml');
  // Ports and paths of this test's own; the builder on vfs as the other builder tests (any file system).
  await writeFile(
    config,
    [
      `root: ${join(work, 'root')}`,
      `metrics: 127.0.0.1:${metrics}`,
      `daemon: { address: ${join(work, 'strata.sock')} }`,
      `registry: { listen: 127.0.0.1:${registry} }`,
      `specs: { listen: 127.0.0.1:${specs} }`,
      `builder: { listen: 127.0.0.1:${builder}, storageDriver: vfs }`,
      '',
    ].join('\n'),
  );
  await spawnServer(STRATA, ['up', '--config', config], {
    name: 'strata up',
    logFile: join(work, 'up.log'),
    timeoutMs: 60_000,
    t,
    readyCheck: async () => (await fetch(`http://127.0.0.1:${metrics}/readyz`)).ok,
  });
  const containerd = await startContainerd({ t });

  // buildah's storage and configuration in the temp dir instead of the machine's.
  const storageConf = join(work, 'storage.conf');
  await writeFile(
    storageConf,
    `[storage]\ndriver = "vfs"\ngraphroot = "${join(work, 'buildah')}"\nrunroot = "${join(work, 'buildah-run')}"\n`,
  );
  await writeFile(join(work, 'registries.conf'), 'unqualified-search-registries = []\n');
  await writeFile(join(work, 'auth.json'), '{"auths":{}}\n', { mode: 0o600 });

  const env = {
    STRATA_REGISTRY: `127.0.0.1:${registry}`,
    STRATA_BUILDER: `127.0.0.1:${builder}`,
    STRATA_SPEC_STORE: join(work, 'root', 'specs'),
    STRATA_ADDRESS: join(work, 'strata.sock'),
    CONTAINERD_ADDRESS: containerd.address,
    CONTAINERD_SNAPSHOTTER: 'native',
    CONTAINERS_STORAGE_CONF: storageConf,
    CONTAINERS_REGISTRIES_CONF: join(work, 'registries.conf'),
    REGISTRY_AUTH_FILE: join(work, 'auth.json'),
    BUILDAH_ISOLATION: 'chroot',
    TMPDIR: work,
    // `strata facade` alone keeps its blob cache there.
    XDG_CACHE_HOME: join(work, 'cache'),
  };
  const out = await runCommand('bash', ['-euo', 'pipefail', '-c', blocks.join('\n')], {
    cwd: ROOT,
    timeoutMs: 600_000,
    env,
  });
  // What the walkthrough says the container prints: a file of the built image and one of the IDE image.
  assert.match(out, /hello from the app's repository/);
  assert.match(out, /built by strata build/);
  assert.match(out, /the IDE's files/);

  // The Daemon section, from the checkout, on the daemon of `strata up`.
  const readme = await readFile(join(ROOT, 'README.md'), 'utf8');
  const [daemonBlock] = shellBlocks(readme, 'Daemon');
  assert.ok(daemonBlock, 'the Daemon section has its shell block');
  // Outside `work`, whose removal comes first: the block unmounts what it mounts, but if it stops half way
  // the mount goes before its directory does.
  const mnt = await tempDir('readme-mnt');
  t.after(async () => {
    await runProcess('umount', [mnt]);
    await removeTempDir(mnt);
  });
  const printed = (p: number) => `127.0.0.1:${p}`;
  await runCommand(
    'bash',
    [
      '-euo',
      'pipefail',
      '-c',
      swapped(daemonBlock, [
        ['/run/strata/strata.sock', join(work, 'strata.sock')],
        ['127.0.0.1:5000', printed(registry)],
        [' /mnt', ` ${mnt}`],
        ['./rootfs', join(work, 'rootfs')],
      ]),
    ],
    { cwd: ROOT, timeoutMs: 300_000, env },
  );
  assert.ok((await stat(join(work, 'rootfs', 'bin', 'busybox'))).isFile(), 'rootfs exported the image');

  // The Facade section: a spec in a store of its own, `strata facade` alone on it, then ctr.
  const [facadeBlock] = shellBlocks(readme, 'Facade');
  assert.ok(facadeBlock, 'the Facade section has its shell block');
  const facade = await freePort();
  const lines = swapped(facadeBlock, [
    ['/tmp/specs', join(work, 'facade-specs')],
    ['127.0.0.1:5050', printed(facade)],
    ['127.0.0.1:5000', printed(registry)],
  ]).split('\n');
  const server = lines.findIndex((l) => l.startsWith('bin/strata facade '));
  assert.ok(server > 0, 'the block starts a facade after putting the spec');
  const sh = (text: string) =>
    runCommand('bash', ['-euo', 'pipefail', '-c', text], { cwd: ROOT, timeoutMs: 300_000, env });
  await sh(lines.slice(0, server).join('\n'));
  await spawnServer('bash', ['-c', `exec ${lines[server]}`], {
    name: 'strata facade',
    cwd: ROOT,
    env,
    logFile: join(work, 'facade.log'),
    timeoutMs: 60_000,
    t,
    readyCheck: async () => (await fetch(`http://${printed(facade)}/readyz`)).ok,
  });
  const ran = await sh(lines.slice(server + 1).join('\n'));
  // `sh -c 'echo $PATH'` in the composed image prints the base's PATH.
  assert.match(ran, /\/usr\/bin/);
});
