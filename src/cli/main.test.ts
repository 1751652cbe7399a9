import assert from 'node:assert/strict';
import { execFile, spawn } from 'node:child_process';
import { once } from 'node:events';
import { mkdir, writeFile } from 'node:fs/promises';
import { type AddressInfo, createServer } from 'node:net';
import { join } from 'node:path';
import { test } from 'node:test';
import { promisify } from 'node:util';
import type { Command } from 'commander';
import { freePort } from '../../test/helpers/ports.ts';
import { within } from '../../test/helpers/process.ts';
import { removeTempDir, tempDir } from '../../test/helpers/tmp.ts';
import { VERSION } from '../version.ts';
import { FLAG_NAMES, RETIRED_FLAGS, SAME_NAME_OTHER_VALUE } from './flag-names.ts';
import { buildProgram } from './main.ts';

const run = promisify(execFile);
const bin = new URL('../../bin/strata', import.meta.url).pathname;

test('strata --version prints the package version, without loading every command', async () => {
  for (const flag of ['--version', '-v']) {
    const { stdout } = await run(bin, [flag]);
    assert.equal(stdout.trim(), VERSION);
    assert.equal((await buildProgram(['node', 'strata', flag])).commands.length, 0);
  }
  // Help and an unknown command still see them all.
  assert.ok((await buildProgram(['node', 'strata', '--help'])).commands.length > 5);
  assert.ok((await buildProgram(['node', 'strata', 'no-such'])).commands.length > 5);
});

test('strata --help lists the program and its options', async () => {
  const { stdout } = await run(bin, ['--help']);
  assert.match(stdout, /Usage: strata/);
  assert.match(stdout, /--version/);
});

function allCommands(cmd: Command, path = 'strata'): { path: string; cmd: Command }[] {
  return [{ path, cmd }, ...cmd.commands.flatMap((c) => allCommands(c, `${path} ${c.name()}`))];
}

test("an option's help states its default once, and no empty list as one", async () => {
  const program = await buildProgram(['node', 'strata']);
  for (const { path, cmd } of allCommands(program)) {
    const help = cmd.createHelp();
    for (const opt of cmd.options) {
      const text = help.optionDescription(opt);
      assert.ok((text.match(/\(default/g) ?? []).length <= 1, `${path} ${opt.flags}: ${text}`);
      assert.doesNotMatch(text, /default: \[\]/, `${path} ${opt.flags}`);
    }
  }
  // What --help prints goes through the same help.
  const { stdout } = await run(bin, ['spec', 'put', '--help']);
  assert.match(stdout, /--ide-layer-ref <ref> +further image whose layers are added\s+\(repeatable\)\n/);
});

test('every command and option has a description, and a shared flag has one name and one kind of value', async () => {
  const program = await buildProgram(['node', 'strata']);
  const help = program.helpInformation();
  const values = new Map<string, Set<string>>();
  for (const { path, cmd } of allCommands(program)) {
    assert.ok(cmd.description(), `${path} has a description`);
    if (cmd !== program && cmd.parent === program) assert.match(help, new RegExp(`\\n  ${cmd.name()}\\b`));
    for (const opt of cmd.options) {
      const name = `${path} ${opt.flags}`;
      assert.ok(opt.description, `${name} has a description`);
      const retired = RETIRED_FLAGS[opt.flags] ?? RETIRED_FLAGS[opt.long ?? ''];
      if (opt.hidden) {
        assert.ok(retired, `${name} is hidden, so it must be a retired name`);
        assert.ok(
          cmd.options.some((o) => !o.hidden && o.long === retired),
          `${name} is an alias of ${retired}, which ${path} must have`,
        );
        continue;
      }
      assert.equal(retired, undefined, `${name} is a retired name (now ${retired})`);
      const long = opt.long ?? opt.flags;
      if (!values.has(long)) values.set(long, new Set());
      values.get(long)!.add(opt.flags);
      const canonical = Object.keys(FLAG_NAMES).find((f) => f.split(' ').includes(long));
      if (canonical !== undefined && !SAME_NAME_OTHER_VALUE[long]) {
        assert.equal(opt.flags, canonical, `${path}: ${long} is written ${canonical} everywhere`);
      }
    }
  }
  for (const [long, forms] of values) {
    const allowed = SAME_NAME_OTHER_VALUE[long] ?? [];
    if (forms.size > 1) {
      for (const f of forms) assert.ok(allowed.includes(f), `${long} is used as ${[...forms].join(' and ')}`);
    }
  }
  for (const f of Object.keys(FLAG_NAMES)) {
    const long = f.split(' ').find((w) => w.startsWith('--'))!;
    assert.ok(values.has(long), `${f} of the naming table is used by some command`);
  }
});

test('a retired flag name still sets the option it was renamed to', async () => {
  const cases: { argv: string[]; command: string[]; key: string; want: unknown }[] = [
    {
      argv: ['daemon', '--metrics-address', '127.0.0.1:9'],
      command: ['daemon'],
      key: 'metrics',
      want: '127.0.0.1:9',
    },
    { argv: ['builder', '--state-dir', '/s'], command: ['builder'], key: 'root', want: '/s' },
    {
      argv: ['facade', '--plain-http-host', 'a:1', '--plain-http', 'b:2'],
      command: ['facade'],
      key: 'plainHttpHost',
      want: ['a:1', 'b:2'],
    },
    { argv: ['spec', 'ls', '--data-dir', '/d'], command: ['spec', 'ls'], key: 'specStore', want: '/d' },
  ];
  for (const c of cases) {
    const program = await buildProgram(['node', 'strata', ...c.argv]);
    let cmd = program;
    for (const name of c.command) cmd = cmd.commands.find((x) => x.name() === name)!;
    let seen: Record<string, unknown> | undefined;
    cmd.action(() => {
      seen = cmd.opts();
    });
    await program.parseAsync(['node', 'strata', ...c.argv]);
    assert.deepEqual(seen?.[c.key], c.want, c.argv.join(' '));
  }
});

test('an address variable that is set but empty counts as unset', async () => {
  const env = { ...process.env, STRATA_BUILDER: '', STRATA_ADDRESS: '', STRATA_SPEC_STORE: '' };
  const help = async (...args: string[]) => (await run(bin, [...args, '--help'], { env })).stdout;
  assert.match(
    await help('build'),
    /--address <host:port>\s+builder address \(env STRATA_BUILDER\)\s+\(default:\s+"127\.0\.0\.1:8080"\)/,
  );
  assert.match(
    await help('images', 'ls'),
    /--address <socket>\s+daemon socket\s+\(default:\s+"\/run\/strata\/strata\.sock"\)/,
  );
});

test('a reader that stops early (`strata spec ls | head -1`) ends the command quietly, as SIGPIPE would', async (t) => {
  const store = await tempDir('cli-epipe');
  t.after(() => removeTempDir(store));
  // Far more output than a pipe holds, so the command is still writing when the reader goes.
  await mkdir(join(store, 'specs'));
  const spec = JSON.stringify({ baseRef: '127.0.0.1:5000/base:latest' });
  await Promise.all(
    Array.from({ length: 3000 }, (_, i) =>
      writeFile(join(store, 'specs', `workspace-${i}-with-a-name-long-enough-to-fill-a-pipe.json`), spec),
    ),
  );
  const child = spawn(bin, ['spec', 'ls', '--spec-store', store], { stdio: ['ignore', 'pipe', 'pipe'] });
  t.after(() => child.kill('SIGKILL'));
  let stderr = '';
  child.stderr.on('data', (chunk: Buffer) => {
    stderr += chunk.toString();
  });
  const exited = new Promise<number | null>((resolve) => child.once('close', (code) => resolve(code)));
  await within(once(child.stdout, 'data'), 30_000, 'first line of spec ls');
  child.stdout.destroy();
  const code = await within(exited, 30_000, 'spec ls after its reader went away');
  assert.equal(stderr, '', 'no stack trace, no message');
  assert.equal(code, 141, 'the status of a command ended by SIGPIPE');
});

test('a log level that does not exist is refused with the levels named, by every server command', async () => {
  const cases = [
    ['facade', '--cache-dir', '/nonexistent/strata-test-cache'],
    ['builder', '--base-repo', 'r/b', '--workspace-repo', 'r/w', '--root', '/nonexistent/strata-test-root'],
    ['spec', 'serve', '--spec-store', '/nonexistent/strata-test-specs', '--listen', '127.0.0.1:0'],
  ];
  for (const args of cases) {
    const r = await run(bin, [...args, '--log-level', 'loud'], { timeout: 30_000 }).then(
      () => assert.fail(`strata ${args[0]} started with --log-level loud`),
      (err: { code?: number; stdout: string; stderr: string }) => err,
    );
    assert.notEqual(r.code, 0, args[0]);
    const said = r.stdout + r.stderr;
    assert.match(said, /fatal, error, warn, info, debug, trace(,| or) silent/, `${args[0]}: ${said}`);
    assert.doesNotMatch(said, /\n\s+at /, `${args[0]}: no stack trace`);
  }
});

test('a server that is not there is named, with the reason, by the daemon, builder and spec store clients', async () => {
  const port = await freePort();
  const cases: [string[], RegExp][] = [
    [
      ['images', 'ls', '--address', '/nonexistent/strata-test.sock'],
      /connect ENOENT \/nonexistent\/strata-test\.sock/,
    ],
    [
      ['build', '--address', `127.0.0.1:${port}`, 'registry.test/img:1'],
      new RegExp(`ECONNREFUSED 127\\.0\\.0\\.1:${port}`),
    ],
    [['spec', 'ls', '--address', `127.0.0.1:${port}`], new RegExp(`ECONNREFUSED 127\\.0\\.0\\.1:${port}`)],
  ];
  for (const [args, reason] of cases) {
    const r = await run(bin, args, { timeout: 30_000 }).then(
      () => assert.fail(`strata ${args.join(' ')} succeeded with no server`),
      (err: { code?: number; stderr: string }) => err,
    );
    assert.notEqual(r.code, 0);
    const line = r.stderr.trim();
    assert.match(line, /cannot connect \(.+\): is the server running there\?$/, line);
    assert.match(line, reason, line);
    assert.doesNotMatch(line, /No connection established|Resolution note|\n/, line);
  }
});

test('a server that cannot start says why in one line on stderr and exits non-zero, as strata up does', async (t) => {
  const dir = await tempDir('cli-start-failure');
  t.after(() => removeTempDir(dir));
  // A port in use for the whole test.
  const busy = createServer();
  busy.listen(0, '127.0.0.1');
  await once(busy, 'listening');
  t.after(() => busy.close());
  const taken = `127.0.0.1:${(busy.address() as AddressInfo).port}`;
  const inUse = new RegExp(`EADDRINUSE.*${taken.replaceAll('.', '\\.')}`);
  const missing = join(dir, 'missing.yaml');
  const cases: { args: string[]; status: number; reason: RegExp; jsonOn: 'stdout' | 'stderr' }[] = [
    {
      args: ['daemon', '--root', join(dir, 'd'), '--address', join(dir, 'd.sock'), '--metrics', taken],
      status: 1,
      reason: inUse,
      jsonOn: 'stdout',
    },
    { args: ['daemon', '--config', missing], status: 2, reason: /missing\.yaml: ENOENT/, jsonOn: 'stdout' },
    {
      args: ['facade', '--cache-dir', join(dir, 'cache'), '--listen', taken],
      status: 1,
      reason: inUse,
      jsonOn: 'stdout',
    },
    {
      args: [
        'builder',
        '--base-repo',
        'r/b',
        '--workspace-repo',
        'r/w',
        '--root',
        join(dir, 'b'),
        '--listen',
        taken,
      ],
      status: 1,
      reason: inUse,
      jsonOn: 'stdout',
    },
    { args: ['builder', '--config', missing], status: 1, reason: /missing\.yaml: ENOENT/, jsonOn: 'stdout' },
    {
      args: [
        'up',
        '--root',
        join(dir, 'up'),
        '--address',
        join(dir, 'up.sock'),
        '--listen',
        taken,
        '--metrics',
        '127.0.0.1:0',
      ],
      status: 1,
      reason: inUse,
      jsonOn: 'stderr',
    },
  ];
  for (const c of cases) {
    const r = await run(bin, c.args, { timeout: 60_000 }).then(
      () => assert.fail(`strata ${c.args.join(' ')} started`),
      (err: { code?: number; stdout: string; stderr: string }) => err,
    );
    const what = `strata ${c.args.join(' ')}`;
    assert.equal(r.code, c.status, `${what}: ${r.stderr}`);
    const command = c.args[0]!;
    // The last line of stderr is the reason, for a person; the JSON logs are left as they were.
    const lines = r.stderr.trimEnd().split('\n');
    assert.match(lines.at(-1)!, new RegExp(`^strata ${command}: .*${c.reason.source}`), what);
    if (c.jsonOn === 'stdout') assert.equal(lines.length, 1, `${what}: ${r.stderr}`);
    const fatal = (c.jsonOn === 'stdout' ? r.stdout : r.stderr)
      .split('\n')
      .filter((l) => l.startsWith('{'))
      .map((l) => JSON.parse(l) as { level: number; msg: string; err?: string })
      .find((l) => l.level === 60);
    assert.equal(fatal?.msg, `${command} failed to start`, what);
    assert.match(fatal?.err ?? '', c.reason, what);
  }
});
