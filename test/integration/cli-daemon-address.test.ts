// The daemon-facing commands reach the daemon at every form of address the daemon itself listens on: an
// absolute path, `unix://` in front, and a path relative to the working directory (the daemon takes
// `--address strata.sock` from there, so its clients must too), also through STRATA_ADDRESS.
import assert from 'node:assert/strict';
import { basename, dirname } from 'node:path';
import { test } from 'node:test';
import { startDaemon } from '../helpers/daemon.ts';
import { runCommand } from '../helpers/process.ts';
import { STRATA } from '../helpers/up.ts';

test('strata images ls reaches the daemon by absolute, unix:// and relative socket paths', async (t) => {
  const d = await startDaemon({ t });
  const cwd = dirname(d.address);
  const ls = (address: string, env: Record<string, string> = {}) =>
    runCommand(STRATA, ['images', 'ls', '-q', ...(address ? ['--address', address] : [])], { cwd, env });
  for (const address of [d.address, `unix://${d.address}`, basename(d.address), `./${basename(d.address)}`]) {
    assert.equal(await ls(address), '', address);
  }
  assert.equal(await ls('', { STRATA_ADDRESS: basename(d.address) }), '', 'STRATA_ADDRESS');
});
