import assert from 'node:assert/strict';
import { chmod, mkdir, utimes, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import { asUnprivileged } from '../../test/helpers/process.ts';
import { removeTempDir, tempDir } from '../../test/helpers/tmp.ts';
import { errorKind } from '../errors.ts';
import {
  DockerConfigCredentials,
  defaultDockerConfigPath,
  normalizeConfigKey,
  parseDockerConfig,
  runCredentialHelper,
} from './docker-config.ts';

const b64 = (s: string): string => Buffer.from(s).toString('base64');

let dir: string;
let binDir: string;
let env: NodeJS.ProcessEnv;

// A fake helper: answers from files named after the server URL it reads on stdin, so tests can check
// both what it was asked and what it says. Special hosts make it fail, hang or print garbage.
const HELPER = `#!/bin/sh
[ "$1" = get ] || { echo "unsupported $1"; exit 2; }
read -r server
case "$server" in
  hang.example) sleep 30 ;;
  broken.example) echo "helper exploded"; exit 3 ;;
  garbage.example) echo "not json"; exit 0 ;;
esac
f="$HELPER_DIR/$(printf %s "$server" | tr -c 'A-Za-z0-9.' _)"
if [ -f "$f" ]; then cat "$f"; else echo "credentials not found in native keychain"; exit 1; fi
`;

async function helperAnswer(server: string, answer: object): Promise<void> {
  await writeFile(join(dir, 'answers', server.replace(/[^A-Za-z0-9.]/g, '_')), JSON.stringify(answer));
}

before(async () => {
  dir = await tempDir('docker-config-test');
  binDir = join(dir, 'bin');
  await mkdir(binDir);
  await mkdir(join(dir, 'answers'));
  await writeFile(join(binDir, 'docker-credential-test'), HELPER);
  await chmod(join(binDir, 'docker-credential-test'), 0o755);
  env = { PATH: `${binDir}:/usr/bin:/bin`, HELPER_DIR: join(dir, 'answers'), HOME: dir };
});
after(() => removeTempDir(dir));

test('config keys are normalised to hosts, Docker Hub aliases to docker.io', () => {
  assert.equal(normalizeConfigKey('https://index.docker.io/v1/'), 'docker.io');
  assert.equal(normalizeConfigKey('index.docker.io'), 'docker.io');
  assert.equal(normalizeConfigKey('registry-1.docker.io'), 'docker.io');
  assert.equal(normalizeConfigKey('http://Reg.Example:5000/v2/'), 'reg.example:5000');
  assert.equal(normalizeConfigKey('reg.example:5000'), 'reg.example:5000');
});

test('the default path follows DOCKER_CONFIG, else HOME/.docker', () => {
  assert.equal(defaultDockerConfigPath({ DOCKER_CONFIG: '/x/y' }), '/x/y/config.json');
  assert.equal(defaultDockerConfigPath({ HOME: '/home/u' }), '/home/u/.docker/config.json');
});

test('auths entries: auth, username+password, identity token, empty', () => {
  const c = parseDockerConfig(
    JSON.stringify({
      auths: {
        'https://index.docker.io/v1/': { auth: b64('hub:pa:ss') },
        'reg.example': { username: 'u', password: 'p' },
        'id.example': { username: 'u2', identitytoken: 'refresh-me' },
        'empty.example': {},
        'bad.example': { auth: b64('nocolon') },
      },
    }),
  );
  assert.deepEqual(c.auths.get('docker.io'), { kind: 'basic', username: 'hub', password: 'pa:ss' });
  assert.deepEqual(c.auths.get('reg.example'), { kind: 'basic', username: 'u', password: 'p' });
  assert.deepEqual(c.auths.get('id.example'), { kind: 'identityToken', token: 'refresh-me', username: 'u2' });
  assert.equal(c.auths.has('empty.example'), false);
  assert.ok(c.auths.get('bad.example') instanceof Error);
});

test('an exact host key wins over a key with scheme or path for the same host', () => {
  const c = parseDockerConfig(
    JSON.stringify({
      auths: { 'https://reg.example/v2/': { auth: b64('a:1') }, 'reg.example': { auth: b64('b:2') } },
    }),
  );
  assert.deepEqual(c.auths.get('reg.example'), { kind: 'basic', username: 'b', password: '2' });
});

test('malformed files are refused with InvalidArgument naming the file', () => {
  for (const text of ['{', '[]', '{"auths": 3}', '{"credHelpers": {"x": "../evil"}}', '{"credsStore": 1}']) {
    assert.throws(
      () => parseDockerConfig(text, '/p/config.json'),
      (err: Error) => errorKind(err) === 'InvalidArgument' && err.message.includes('/p/config.json'),
      text,
    );
  }
});

test('a config that is not JSON is refused without quoting the credentials in it', () => {
  // V8's message for an unexpected character quotes the text around it: here, part of the password.
  const text = '{"auths": {"r.io": {"auth": dXNlcjpodW50ZXIy}}}';
  assert.throws(
    () => parseDockerConfig(text, '/p/config.json'),
    (err: Error) => {
      assert.equal(errorKind(err), 'InvalidArgument');
      assert.match(err.message, /\/p\/config\.json: not valid JSON/);
      assert.doesNotMatch(err.message, /dXNl/);
      return true;
    },
  );
});

test('a missing file means no credentials', async () => {
  const store = new DockerConfigCredentials({ path: join(dir, 'nope', 'config.json'), env });
  assert.equal(await store.get('reg.example'), undefined);
});

test('the file is re-read when it changes', async () => {
  const path = join(dir, 'reread.json');
  await writeFile(path, JSON.stringify({ auths: { 'reg.example': { auth: b64('a:1') } } }));
  await utimes(path, 1000, 1000);
  const store = new DockerConfigCredentials({ path, env });
  assert.deepEqual(await store.get('REG.example'), { kind: 'basic', username: 'a', password: '1' });
  // Same size, different mtime: still noticed.
  await writeFile(path, JSON.stringify({ auths: { 'reg.example': { auth: b64('b:2') } } }));
  await utimes(path, 2000, 2000);
  assert.deepEqual(await store.get('reg.example'), { kind: 'basic', username: 'b', password: '2' });
  const bad = join(dir, 'bad-entry.json');
  await writeFile(
    bad,
    JSON.stringify({ auths: { 'bad.example': { auth: b64('x') }, 'ok.example': { auth: b64('o:k') } } }),
  );
  const store2 = new DockerConfigCredentials({ path: bad, env });
  await assert.rejects(store2.get('bad.example'), (err: Error) => errorKind(err) === 'InvalidArgument');
  assert.deepEqual(await store2.get('ok.example'), { kind: 'basic', username: 'o', password: 'k' });
});

test('with onReloadError, an edit that does not parse is reported once and the credentials before stay', async () => {
  const path = join(dir, 'hot.json');
  await writeFile(path, JSON.stringify({ auths: { 'reg.example': { auth: b64('a:1') } } }));
  await utimes(path, 1000, 1000);
  const errors: string[] = [];
  let reloads = 0;
  const store = new DockerConfigCredentials({
    path,
    env,
    onReloadError: (err) => errors.push(String(err)),
    onReload: () => reloads++,
  });
  assert.deepEqual(await store.get('reg.example'), { kind: 'basic', username: 'a', password: '1' });
  await writeFile(path, '{"auths": {"reg.exa');
  await utimes(path, 2000, 2000);
  assert.deepEqual(await store.get('reg.example'), { kind: 'basic', username: 'a', password: '1' });
  assert.deepEqual(await store.get('reg.example'), { kind: 'basic', username: 'a', password: '1' });
  assert.equal(errors.length, 1);
  assert.match(errors[0]!, /hot\.json/);
  await writeFile(path, JSON.stringify({ auths: { 'reg.example': { auth: b64('c:3') } } }));
  await utimes(path, 3000, 3000);
  assert.deepEqual(await store.get('reg.example'), { kind: 'basic', username: 'c', password: '3' });
  assert.equal(reloads, 1);
});

test('an edit refused because it could not be read is read again once its mode is fixed', async () => {
  const sub = join(dir, 'modes');
  await mkdir(sub, { mode: 0o755 });
  await chmod(dir, 0o755);
  const path = join(sub, 'config.json');
  await writeFile(path, JSON.stringify({ auths: { 'reg.example': { auth: b64('a:1') } } }), { mode: 0o644 });
  const errors: unknown[] = [];
  const store = new DockerConfigCredentials({ path, env, onReloadError: (err) => errors.push(err) });
  const get = () => asUnprivileged(() => store.get('reg.example'));
  assert.deepEqual(await get(), { kind: 'basic', username: 'a', password: '1' });
  // Written by a config manager with a mode the server cannot read, then the mode is fixed.
  await writeFile(path, JSON.stringify({ auths: { 'reg.example': { auth: b64('b:2') } } }));
  await chmod(path, 0o600);
  assert.deepEqual(await get(), { kind: 'basic', username: 'a', password: '1' });
  assert.equal(errors.length, 1);
  await chmod(path, 0o644);
  assert.deepEqual(await get(), { kind: 'basic', username: 'b', password: '2' });
});

test('checkOnUse false: the file is read again only by refresh()', async () => {
  const path = join(dir, 'on-refresh.json');
  await writeFile(path, JSON.stringify({ auths: { 'reg.example': { auth: b64('a:1') } } }));
  await utimes(path, 1000, 1000);
  let reloads = 0;
  const store = new DockerConfigCredentials({ path, env, checkOnUse: false, onReload: () => reloads++ });
  assert.deepEqual(await store.get('reg.example'), { kind: 'basic', username: 'a', password: '1' });
  await writeFile(path, JSON.stringify({ auths: { 'reg.example': { auth: b64('b:2') } } }));
  await utimes(path, 2000, 2000);
  assert.deepEqual(await store.get('reg.example'), { kind: 'basic', username: 'a', password: '1' });
  await store.refresh();
  assert.deepEqual(await store.get('reg.example'), { kind: 'basic', username: 'b', password: '2' });
  assert.equal(reloads, 1);
});

test('credential helper: per-host credHelpers, credsStore, identity tokens, fallback to auths', async () => {
  await helperAnswer('helped.example', { ServerURL: 'helped.example', Username: 'hu', Secret: 'hs' });
  await helperAnswer('https://index.docker.io/v1/', { Username: '<token>', Secret: 'hub-refresh' });
  const path = join(dir, 'helpers.json');
  await writeFile(
    path,
    JSON.stringify({
      credHelpers: { 'helped.example': 'test', 'missing.example': 'absent' },
      credsStore: 'test',
      auths: { 'fallback.example': { auth: b64('f:b') } },
    }),
  );
  const store = new DockerConfigCredentials({ path, env });
  assert.deepEqual(await store.get('helped.example'), { kind: 'basic', username: 'hu', password: 'hs' });
  // Docker Hub is asked for under the URL Docker uses for it.
  assert.deepEqual(await store.get('registry-1.docker.io'), { kind: 'identityToken', token: 'hub-refresh' });
  // credsStore knows nothing about this host: the auths entry answers.
  assert.deepEqual(await store.get('fallback.example'), { kind: 'basic', username: 'f', password: 'b' });
  assert.equal(await store.get('unknown.example'), undefined);
  await assert.rejects(store.get('missing.example'), (err: Error) => {
    assert.equal(errorKind(err), 'FailedPrecondition');
    assert.match(err.message, /docker-credential-absent not found/);
    return true;
  });
});

test('credential helper failures: error exit, garbage output, hanging helper', async () => {
  await assert.rejects(runCredentialHelper('test', 'broken.example', { env }), (err: Error) => {
    assert.equal(errorKind(err), 'Unavailable');
    assert.match(err.message, /exit 3.*helper exploded/);
    return true;
  });
  await assert.rejects(
    runCredentialHelper('test', 'garbage.example', { env }),
    (err: Error) => errorKind(err) === 'Unavailable' && /invalid JSON/.test(err.message),
  );
  await assert.rejects(
    runCredentialHelper('test', 'hang.example', { env, timeoutMs: 300 }),
    (err: Error) => errorKind(err) === 'DeadlineExceeded',
  );
  const ac = new AbortController();
  const pending = runCredentialHelper('test', 'hang.example', { env, signal: ac.signal });
  ac.abort();
  await assert.rejects(pending, (err: Error) => errorKind(err) === 'Aborted');
  await assert.rejects(
    runCredentialHelper('../x', 'a', { env }),
    (err: Error) => errorKind(err) === 'InvalidArgument',
  );
});

test('helper answers are cached, and the cache is dropped when the file changes', async () => {
  await helperAnswer('cached.example', { Username: 'c1', Secret: 's1' });
  const path = join(dir, 'cache.json');
  await writeFile(path, JSON.stringify({ credHelpers: { 'cached.example': 'test' } }));
  await utimes(path, 1000, 1000);
  const store = new DockerConfigCredentials({ path, env });
  assert.deepEqual(await store.get('cached.example'), { kind: 'basic', username: 'c1', password: 's1' });
  await helperAnswer('cached.example', { Username: 'c2', Secret: 's2' });
  assert.deepEqual(await store.get('cached.example'), { kind: 'basic', username: 'c1', password: 's1' });
  await utimes(path, 3000, 3000);
  assert.deepEqual(await store.get('cached.example'), { kind: 'basic', username: 'c2', password: 's2' });
});
