// The builder's proxy settings for git and buildah: both spellings of each variable with one value, and
// git reaching a remote through a forward proxy that alone knows its name, while loopback stays direct.
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { test } from 'node:test';
import { startForwardProxy } from '../../test/helpers/forward-proxy.ts';
import { startGitHttp } from '../../test/helpers/git-http.ts';
import { createRepo } from '../../test/helpers/git-repo.ts';
import { freePort } from '../../test/helpers/ports.ts';
import { removeTempDir, tempDir } from '../../test/helpers/tmp.ts';
import { GitRepo, type GitSource } from './git-source.ts';
import { gitProxyVariables, proxyVariables } from './proxy-env.ts';

test('each proxy variable goes out under both names; the uppercase one wins, an empty one is unset', () => {
  assert.deepEqual(proxyVariables({ HTTP_PROXY: 'http://p:3128', PATH: '/bin', no_proxy: 'corp' }), {
    HTTP_PROXY: 'http://p:3128',
    http_proxy: 'http://p:3128',
    NO_PROXY: 'corp',
    no_proxy: 'corp',
  });
  assert.deepEqual(
    proxyVariables({
      HTTPS_PROXY: '',
      https_proxy: 'http://low:1',
      ALL_PROXY: 'socks5://s:1',
      FTP_PROXY: 'f:2',
    }),
    {
      HTTPS_PROXY: 'http://low:1',
      https_proxy: 'http://low:1',
      FTP_PROXY: 'f:2',
      ftp_proxy: 'f:2',
      ALL_PROXY: 'socks5://s:1',
      all_proxy: 'socks5://s:1',
    },
  );
  assert.deepEqual(proxyVariables({ HTTP_PROXY: 'http://up:1', http_proxy: 'http://low:1' }), {
    HTTP_PROXY: 'http://up:1',
    http_proxy: 'http://up:1',
  });
  // Under CGI, HTTP_PROXY may be a client's header.
  assert.deepEqual(proxyVariables({ HTTP_PROXY: 'http://evil:1', REQUEST_METHOD: 'GET' }), {});
  assert.deepEqual(proxyVariables({}), {});
});

test('git is never sent through the proxy to loopback, as Go never sends a registry request there', () => {
  assert.deepEqual(gitProxyVariables({}), {});
  assert.deepEqual(gitProxyVariables({ NO_PROXY: 'x', no_proxy: 'x' }), { NO_PROXY: 'x', no_proxy: 'x' });
  const vars = gitProxyVariables(proxyVariables({ HTTP_PROXY: 'http://p:1', NO_PROXY: 'corp.example' }));
  assert.equal(vars.no_proxy, 'corp.example,localhost,127.0.0.0/8,::1');
  assert.equal(vars.NO_PROXY, vars.no_proxy);
});

const source = (remoteUri: string): GitSource => ({
  remoteUri,
  targetMode: 'remoteHead',
  cloneTarget: '',
  checkoutLocation: '',
  fullClone: false,
});

test('git fetches through the proxy the builder was given, by a name only the proxy resolves', async (t) => {
  const dir = await tempDir('git-proxy');
  t.after(() => removeTempDir(dir));
  const repo = await createRepo(join(dir, 'repos', 'app'));
  const head = await repo.commit({ 'hello.txt': 'hi\n' });
  const http = await startGitHttp(join(dir, 'repos'), t);
  const backend = new URL(http.url('app')).host;
  const name = `git.strata-proxy.invalid:${new URL(http.url('app')).port}`;
  const proxy = await startForwardProxy({ routes: { [name]: backend }, t });
  // Only the uppercase name, as Go programs are often given it: curl alone would not read it.
  const options = {
    allowFileRemotes: false,
    timeoutMs: 30_000,
    proxy: proxyVariables({ HTTP_PROXY: proxy.url }),
  };
  const viaProxy = GitRepo.open(join(dir, 'git-a'), source(`http://${name}/app`), options);
  assert.equal(await viaProxy.resolveCommit(), head);
  assert.equal(await viaProxy.fetch(head), head);
  assert.ok(
    proxy.seen.some((s) => s.target.startsWith(`http://${name}/app/`)),
    JSON.stringify(proxy.seen),
  );

  // A loopback remote is reached directly, though the proxy named is not there at all.
  const dead = { ...options, proxy: proxyVariables({ HTTP_PROXY: `http://127.0.0.1:${await freePort()}` }) };
  const direct = GitRepo.open(join(dir, 'git-b'), source(http.url('app')), dead);
  assert.equal(await direct.resolveCommit(), head);
});
