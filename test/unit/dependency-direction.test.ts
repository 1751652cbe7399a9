// The dependency direction is a check that fails: biome.json's per-folder noRestrictedImports rules, which
// `npm run check` runs, reject an import pointing up (oci ← registry/content/metadata ← snapshots/
// facade/builder/hosted ← api ← server ← cli, and src/client between api and cli). Probed on a temp tree that
// holds the repository's own biome.json and a few files, some importing the wrong way.
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { copyFile, mkdir, writeFile } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { after, before, test } from 'node:test';
import { promisify } from 'node:util';
import { Cleanup, tempDir } from '../helpers/tmp.ts';

const run = promisify(execFile);
const ROOT = new URL('../../', import.meta.url).pathname;
const BIOME = join(ROOT, 'node_modules/.bin/biome');
const cleanup = new Cleanup();
let tree: string;

before(async () => {
  tree = await tempDir('boundaries');
  cleanup.addDir(tree);
  await copyFile(join(ROOT, 'biome.json'), join(tree, 'biome.json'));
});
after(() => cleanup.run());

/** Lints one file placed at `path` in the temp tree; returns the diagnostics of noRestrictedImports. */
async function lint(path: string, source: string): Promise<string[]> {
  const file = join(tree, path);
  await mkdir(dirname(file), { recursive: true });
  await writeFile(file, source);
  const r = await run(BIOME, ['lint', '--max-diagnostics=50', path], { cwd: tree }).then(
    (ok) => ({ out: ok.stdout + ok.stderr }),
    (err: { stdout: string; stderr: string }) => ({ out: err.stdout + err.stderr }),
  );
  return r.out.split('\n').filter((l) => l.includes('noRestrictedImports'));
}

const uses = (spec: string) => `import { x } from '${spec}';\nexport const y = x;\n`;

test('an import pointing up is refused', async () => {
  const wrong: Array<[string, string]> = [
    ['src/oci/probe.ts', '../registry/client.ts'],
    ['src/metadata/probe.ts', '../snapshots/differ.ts'],
    ['src/content/probe.ts', '../api/grpc/status.ts'],
    ['src/metadata/probe2.ts', '../hosted/registry.ts'],
    ['src/oci/probe2.ts', '../hosted/registry.ts'],
    ['src/hosted/probe.ts', '../server/hosted.ts'],
    ['src/facade/providers/probe.ts', '../../api/gen/registryfacade/provider_pb.ts'],
    ['src/facade/probe.ts', '@grpc/grpc-js'],
    ['src/snapshots/probe2.ts', '@bufbuild/protobuf'],
    ['src/snapshots/probe.ts', '../server/wiring.ts'],
    ['src/builder/probe.ts', '../cli/main.ts'],
    ['src/api/services/probe.ts', '../../server/config.ts'],
    ['src/client/pull/probe.ts', '../../cli/progress.ts'],
    ['src/server/probe.ts', '../cli/daemon.ts'],
  ];
  for (const [path, spec] of wrong) {
    assert.equal((await lint(path, uses(spec))).length, 1, `${path} importing ${spec} must fail`);
  }
});

test('imports pointing down (and tests) pass', async () => {
  const right: Array<[string, string]> = [
    ['src/registry/ok.ts', '../oci/digest.ts'],
    ['src/snapshots/ok.ts', '../metadata/db.ts'],
    ['src/facade/ok.ts', '../registry/client.ts'],
    ['src/hosted/ok.ts', '../metadata/db.ts'],
    ['src/api/services/ok.ts', '../../metadata/images.ts'],
    ['src/client/ok.ts', '../api/grpc/client.ts'],
    ['src/server/ok.ts', '../api/grpc/server.ts'],
    ['src/cli/ok.ts', '../server/lifecycle.ts'],
    ['src/metadata/gc-probe.test.ts', '../snapshots/differ.ts'],
  ];
  for (const [path, spec] of right) {
    assert.deepEqual(await lint(path, uses(spec)), [], `${path} importing ${spec} is allowed`);
  }
});
