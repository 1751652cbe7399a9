// `strata builder` behind a forward proxy, given as HTTP_PROXY alone (as Go programs are often given it).
// The git server, the registry of the base image and a file server a RUN step downloads from are known
// by names only the proxy resolves, so the build passes only if git, buildah's pull and the RUN step all
// go through it. The image keeps nothing of the proxy, and a builder without one plans the same key.
import assert from 'node:assert/strict';
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { join } from 'node:path';
import { test } from 'node:test';
import { type SeedBuilderClient, seedBuilderClient } from '../helpers/builder-client.ts';
import { startForwardProxy } from '../helpers/forward-proxy.ts';
import { startGitHttp } from '../helpers/git-http.ts';
import { createRepo } from '../helpers/git-repo.ts';
import { pushBusybox, skopeoInspect } from '../helpers/images.ts';
import { freePort, isListening } from '../helpers/ports.ts';
import { spawnServer } from '../helpers/process.ts';
import { startRegistry } from '../helpers/registry.ts';
import { removeTempDir, tempDir } from '../helpers/tmp.ts';

const STRATA = new URL('../../bin/strata', import.meta.url).pathname;
const NAMES = ['HTTP_PROXY', 'HTTPS_PROXY', 'NO_PROXY', 'FTP_PROXY', 'ALL_PROXY'];
/** The test process's own proxy settings, if any, are kept from the builders. */
const NO_PROXY_ENV = Object.fromEntries(
  NAMES.flatMap((n) => [n, n.toLowerCase()]).map((n) => [n, undefined]),
);
const ALL = { total: { allow_all: true } };

test('behind a proxy: git, the base image pull and RUN steps go through it; the image and key keep nothing of it', async (t) => {
  const dir = await tempDir('builder-proxy');
  t.after(() => removeTempDir(dir));
  const reg = await startRegistry({ t });
  await pushBusybox(reg, 'library/busybox');
  const files = createServer((_req, res) => res.end('fetched through the proxy\n'));
  await new Promise<void>((resolve) => files.listen(0, '127.0.0.1', resolve));
  t.after(() => new Promise<void>((resolve) => files.close(() => resolve())));
  const filesPort = (files.address() as AddressInfo).port;
  const http = await startGitHttp(join(dir, 'repos'), t);
  const gitPort = new URL(http.url('app')).port;
  const regPort = reg.host.split(':')[1];
  const names = {
    git: `git.behind-proxy.invalid:${gitPort}`,
    registry: `registry.behind-proxy.invalid:${regPort}`,
    files: `files.behind-proxy.invalid:${filesPort}`,
  };
  const proxy = await startForwardProxy({
    routes: {
      [names.git]: `127.0.0.1:${gitPort}`,
      [names.registry]: reg.host,
      [names.files]: `127.0.0.1:${filesPort}`,
    },
    t,
  });
  const repo = await createRepo(join(dir, 'repos', 'app'));
  const run = `RUN wget -q -O /fetched.txt http://${names.files}/f && cat /fetched.txt && env | grep -i _proxy= | sort`;
  await repo.commit({
    'pulled/Dockerfile': `FROM ${names.registry}/library/busybox\nARG GREETING=hello\n${run}\n`,
    // A base the builder without a proxy can pin too (a loopback registry is never proxied).
    'plain/Dockerfile': `FROM ${reg.host}/library/busybox\nARG GREETING=hello\n${run}\n`,
  });

  const builder = async (name: string, env: Record<string, string | undefined>) => {
    const port = await freePort();
    await spawnServer(
      STRATA,
      [
        'builder',
        '--listen',
        `127.0.0.1:${port}`,
        '--base-repo',
        `${reg.host}/base-images`,
        '--workspace-repo',
        `${reg.host}/workspace-images`,
        '--root',
        join(dir, name),
        '--plain-http-host',
        reg.host,
        '--plain-http-host',
        names.registry,
        '--storage-driver',
        'vfs',
      ],
      {
        name: `strata builder (${name})`,
        env: { ...NO_PROXY_ENV, ...env },
        logFile: join(dir, `${name}.log`),
        readyCheck: () => isListening(port),
        t,
      },
    );
    return `127.0.0.1:${port}`;
  };
  const proxied = await builder('proxied', { HTTP_PROXY: proxy.url });
  const direct = await builder('direct', {});
  const client: SeedBuilderClient = await seedBuilderClient();
  t.after(() => client.cleanup());
  const source = (remote: string, sub: string) => ({
    file: {
      source: { git: { remote_uri: remote, target_mode: 'REMOTE_HEAD', checkout_location: 'repo' } },
      dockerfile_path: `repo/${sub}/Dockerfile`,
      context_path: `repo/${sub}`,
    },
  });

  const built = await client.call(proxied, 'Build', {
    source: source(`http://${names.git}/app`, 'pulled'),
    auth: ALL,
  });
  const last = built.responses.at(-1);
  assert.equal(last?.status, 'done_success', JSON.stringify(built.responses));
  const targets = proxy.seen.map((s) => s.target);
  for (const name of Object.values(names)) {
    assert.ok(
      targets.some((u) => u.startsWith(`http://${name}/`)),
      `${name} reached through the proxy: ${targets}`,
    );
  }
  const buildId: string = built.responses.find((r) => r.info)?.info.build_id;
  const log = (await client.call(proxied, 'Logs', { build_id: buildId })).responses
    .map((r) => r.content)
    .join('');
  assert.match(log, /fetched through the proxy/);
  // Both spellings, as docker build gives them, though the builder was given one.
  for (const name of ['HTTP_PROXY', 'http_proxy']) assert.ok(log.includes(`${name}=${proxy.url}`), log);

  // Nothing of the proxy in the image: not its config's environment, not its history.
  const config = JSON.stringify(await skopeoInspect(last.ref, { config: true }));
  assert.ok(!config.includes(proxy.url) && !/(http|https|ftp|no|all)_proxy/i.test(config), config);
  assert.match(config, /ARG GREETING/);

  // Planned with and without a proxy (the same commit, fetched through it or not): one key.
  const plan = async (address: string, remote: string) => {
    const r = await client.call(address, 'ResolveWorkspaceImage', {
      source: source(remote, 'plain'),
      auth: ALL,
    });
    assert.equal(r.code, 'OK', JSON.stringify(r));
    return [r.responses[0].ref, r.responses[0].base_ref];
  };
  assert.deepEqual(await plan(proxied, `http://${names.git}/app`), await plan(direct, http.url('app')));
});
