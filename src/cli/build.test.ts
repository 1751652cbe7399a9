import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { test } from 'node:test';
import { pino } from 'pino';
import { waitFor, within } from '../../test/helpers/process.ts';
import { BuildStatus, ImageBuilder } from '../api/gen/builder/imgbuilder_pb.ts';
import { createGrpcServer } from '../api/grpc/server.ts';
import { implement } from '../api/grpc/service.ts';

const bin = new URL('../../bin/strata', import.meta.url).pathname;

test('Ctrl-C during `strata build` on a terminal: the cursor comes back, the bar ends, status 130', async (t) => {
  // A builder whose build runs until the caller goes away.
  const server = createGrpcServer({
    logger: pino({ level: 'silent' }),
    services: [
      implement(ImageBuilder, {
        build: async function* (_req, ctx) {
          yield {
            ref: 'reg/ws:abc',
            status: BuildStatus.running,
            message: 'building',
            info: { buildId: '00000000-0000-4000-8000-000000000001', status: BuildStatus.running },
          };
          await new Promise((resolve) => ctx.signal.addEventListener('abort', resolve, { once: true }));
        },
      }),
    ],
  });
  t.after(() => server.shutdown());
  const port = await server.listenTcp('127.0.0.1', 0);

  // `script` gives the command a terminal; a ^C typed into it reaches the command as SIGINT.
  const child = spawn(
    'script',
    ['-qfec', `${bin} build --no-logs --address 127.0.0.1:${port} reg/app:1`, '/dev/null'],
    { stdio: ['pipe', 'pipe', 'pipe'], env: { ...process.env, TERM: 'xterm' } },
  );
  t.after(() => child.kill('SIGKILL'));
  let shown = '';
  child.stdout.on('data', (c: Buffer) => {
    shown += c.toString();
  });
  const exited = new Promise<number | null>((resolve) => child.once('close', (code) => resolve(code)));
  await waitFor(() => shown.includes('[running] reg/ws:abc: building'), 30_000, {
    what: 'the running status on the terminal',
  });
  child.stdin.write('\x03');
  const code = await within(exited, 30_000, 'strata build after ^C');

  assert.equal(code, 130, shown);
  const hidden = shown.lastIndexOf('\x1b[?25l');
  assert.ok(hidden >= 0, 'the bar hid the cursor');
  assert.ok(shown.indexOf('\x1b[?25h', hidden) > hidden, 'and shows it again before exiting');
  assert.match(shown, /strata build: interrupted; the build goes on on the builder/);
});
