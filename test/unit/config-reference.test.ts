// docs/configuration.md cannot drift from the code: its tables name exactly the keys each parser accepts
// (their key trees) and the flags of `strata spec serve`, only flags the commands have, and the
// shared-flag table is the CLI's naming table; every example config under examples/ is accepted by the
// real parser of its service.
import assert from 'node:assert/strict';
import { readdir, readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { test } from 'node:test';
import type { Command } from 'commander';
import { FLAG_NAMES, SAME_NAME_OTHER_VALUE } from '../../src/cli/flag-names.ts';
import { buildProgram } from '../../src/cli/main.ts';
import { BUILDER_KEYS, loadBuilderConfig } from '../../src/server/builder.ts';
import { DAEMON_KEYS, daemonConfig, loadDaemonConfigFile } from '../../src/server/config.ts';
import { type KeyTree, keyPaths } from '../../src/server/config-keys.ts';
import { FACADE_KEYS, loadFacadeConfig } from '../../src/server/facade-config.ts';
import { loadUpConfig, UP_KEYS } from '../../src/server/up-config.ts';

const ROOT = new URL('../../', import.meta.url).pathname;
const REFERENCE = join(ROOT, 'docs/configuration.md');

/** Each service: its key tree and how its example file is loaded. */
const SERVICES: Record<string, { keys: KeyTree; load: (file: string) => Promise<unknown> }> = {
  up: { keys: UP_KEYS, load: (f) => loadUpConfig(f) },
  daemon: { keys: DAEMON_KEYS, load: async (f) => daemonConfig(await loadDaemonConfigFile(f)) },
  facade: { keys: FACADE_KEYS, load: (f) => loadFacadeConfig(f) },
  builder: { keys: BUILDER_KEYS, load: (f) => loadBuilderConfig(f) },
};

/** The lines of the reference's section `## <heading>`, up to the next section. */
function section(text: string, heading: string): string[] {
  const lines = text.split('\n');
  const start = lines.indexOf(`## ${heading}`);
  assert.ok(start >= 0, `docs/configuration.md has a section "${heading}"`);
  const end = lines.findIndex((l, i) => i > start && l.startsWith('## '));
  return lines.slice(start + 1, end < 0 ? undefined : end);
}

/** Table rows as their cells (header and rule rows left out). */
function rows(lines: string[]): string[][] {
  return lines
    .filter((l) => l.startsWith('| `'))
    .map((l) =>
      l
        .slice(1, -1)
        .split('|')
        .map((c) => c.trim()),
    );
}

const backticked = (cell: string): string[] => [...cell.matchAll(/`([^`]+)`/g)].map((m) => m[1]!);

function visibleLongFlags(cmd: Command): Set<string> {
  return new Set(cmd.options.filter((o) => !o.hidden && o.long).map((o) => o.long!));
}

test('the reference names every key each parser accepts, and no other', async () => {
  const text = await readFile(REFERENCE, 'utf8');
  for (const [service, { keys }] of Object.entries(SERVICES)) {
    const documented = rows(section(text, `\`strata ${service}\``)).map((r) => backticked(r[0]!)[0]!);
    assert.deepEqual([...documented].sort(), keyPaths(keys).sort(), `strata ${service}: keys documented`);
    assert.equal(new Set(documented).size, documented.length, `strata ${service}: each key once`);
  }
});

test("the reference's flags are the commands' flags", async () => {
  const text = await readFile(REFERENCE, 'utf8');
  const program = await buildProgram(['node', 'strata']);
  for (const service of Object.keys(SERVICES)) {
    const cmd = program.commands.find((c) => c.name() === service)!;
    const flags = visibleLongFlags(cmd);
    for (const r of rows(section(text, `\`strata ${service}\``))) {
      for (const flag of backticked(r[2] ?? '').filter((f) => f.startsWith('-'))) {
        assert.ok(flags.has(flag), `strata ${service} has ${flag} (for ${r[0]})`);
      }
    }
  }
  const shared = rows(section(text, 'Flags shared by the commands')).flatMap((r) => backticked(r[0]!));
  const known = new Set([...Object.keys(FLAG_NAMES), ...Object.values(SAME_NAME_OTHER_VALUE).flat()]);
  for (const f of shared) assert.ok(known.has(f), `${f} is in the CLI's naming table`);
  for (const f of Object.keys(FLAG_NAMES)) assert.ok(shared.includes(f), `${f} is in the shared-flag table`);
});

test('the reference names exactly the flags of `strata spec serve`, which has no config file', async () => {
  const text = await readFile(REFERENCE, 'utf8');
  const program = await buildProgram(['node', 'strata']);
  const serve = program.commands
    .find((c) => c.name() === 'spec')!
    .commands.find((c) => c.name() === 'serve')!;
  const documented = rows(section(text, '`strata spec serve`')).map(
    (r) => backticked(r[0]!)[0]!.split(' ')[0]!,
  );
  assert.deepEqual(documented.sort(), [...visibleLongFlags(serve)].sort());
});

test('every example config is accepted by its service', async () => {
  const dir = join(ROOT, 'examples');
  const files = (await readdir(dir)).filter((f) => /\.ya?ml$/.test(f));
  for (const service of Object.keys(SERVICES)) {
    assert.ok(files.includes(`${service}.yaml`), `examples/${service}.yaml exists`);
  }
  for (const file of files) {
    const service = SERVICES[file.replace(/\.ya?ml$/, '')];
    assert.ok(service, `examples/${file} names a service`);
    await service.load(join(dir, file));
  }
});
