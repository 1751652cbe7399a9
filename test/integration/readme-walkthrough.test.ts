// The README's walkthrough, run as it is written: its fenced shell blocks, in order, in one bash, against
// a `strata up` and a containerd of this test's own. Only the environment differs from a reader's: the
// addresses the walkthrough takes from variables (STRATA_REGISTRY, STRATA_BUILDER, STRATA_SPEC_STORE,
// containerd's CONTAINERD_ADDRESS) point at this test's servers, and buildah keeps its storage in a temp dir.
import assert from 'node:assert/strict';
import { readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { test } from 'node:test';
import { startContainerd } from '../helpers/containerd.ts';
import { freePort } from '../helpers/ports.ts';
import { runCommand, spawnServer } from '../helpers/process.ts';
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

  const out = await runCommand('bash', ['-euo', 'pipefail', '-c', blocks.join('\n')], {
    cwd: ROOT,
    timeoutMs: 600_000,
    env: {
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
    },
  });
  // What the walkthrough says the container prints: a file of the built image and one of the IDE image.
  assert.match(out, /hello from the app's repository/);
  assert.match(out, /built by strata build/);
  assert.match(out, /the IDE's files/);
});
