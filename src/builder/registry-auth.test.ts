import assert from 'node:assert/strict';
import { test } from 'node:test';
import { parseNormalizedReference } from '../oci/reference.ts';
import { staticCredentials } from '../registry/credentials.ts';
import {
  AuthPolicy,
  authFileJson,
  buildAuthEntries,
  decodeAdditional,
  isEcrDomain,
  secretsOf,
} from './registry-auth.ts';

const b64 = (s: string) => Buffer.from(s).toString('base64');
const repos = { base: 'reg.internal/base-images', workspace: 'reg.internal/workspace-images' };
const installation = staticCredentials({
  'reg.internal': { kind: 'basic', username: 'install', password: 'install-secret' },
  'docker.io': { kind: 'basic', username: 'hub', password: 'hub-secret' },
  '123456789012.dkr.ecr.eu-west-1.amazonaws.com': { kind: 'basic', username: 'AWS', password: 'ecr' },
});

test('additional values decode as Gitpod does (split at the last colon)', () => {
  assert.deepEqual(decodeAdditional(b64('user:pa:ss')), {
    kind: 'basic',
    username: 'user:pa',
    password: 'ss',
  });
  assert.equal(decodeAdditional(b64('nocolon')), undefined);
  assert.equal(decodeAdditional('not base64!'), undefined);
  assert.equal(decodeAdditional(''), undefined);
  assert.ok(isEcrDomain('123456789012.dkr.ecr.eu-west-1.amazonaws.com'));
  assert.ok(!isEcrDomain('dkr.ecr.eu-west-1.amazonaws.com'));
});

test('total, selective and none: installation credentials only where allowed, additional as fallback', async () => {
  const additional = { 'docker.io': b64('me:mine'), 'ghcr.io': b64('gh:tok') };
  const all = new AuthPolicy({ mode: { kind: 'total', allowAll: true }, additional }, repos, installation);
  assert.deepEqual(await all.forDomain('docker.io'), {
    kind: 'basic',
    username: 'hub',
    password: 'hub-secret',
  });
  assert.deepEqual(await all.forDomain('ghcr.io'), { kind: 'basic', username: 'gh', password: 'tok' });

  const none = new AuthPolicy({ mode: { kind: 'total', allowAll: false }, additional }, repos, installation);
  assert.deepEqual(await none.forDomain('docker.io'), { kind: 'basic', username: 'me', password: 'mine' });
  assert.equal(await none.forDomain('reg.internal'), undefined);
  assert.deepEqual(await none.forDomain('123456789012.dkr.ecr.eu-west-1.amazonaws.com'), {
    kind: 'basic',
    username: 'AWS',
    password: 'ecr',
  });

  const sel = new AuthPolicy(
    {
      mode: {
        kind: 'selective',
        allowBaseRepository: true,
        allowWorkspaceRepository: false,
        anyOf: ['docker.io'],
      },
      additional: {},
    },
    repos,
    installation,
  );
  assert.ok(sel.allows('reg.internal'));
  assert.ok(sel.allows('docker.io'));
  assert.ok(!sel.allows('quay.io'));
  assert.equal(await sel.forDomain('quay.io'), undefined);
});

test('a build auth file names repositories, and never lets the request swap the workspace registry credentials', async () => {
  const policy = new AuthPolicy(
    {
      mode: {
        kind: 'selective',
        allowBaseRepository: false,
        allowWorkspaceRepository: false,
        anyOf: ['docker.io'],
      },
      additional: { 'reg.internal': b64('evil:swap'), 'quay.io': b64('q:qtoken') },
    },
    repos,
    installation,
  );
  const entries = await buildAuthEntries({
    policy,
    installation,
    pulls: ['busybox', 'quay.io/team/tool:1', 'reg.internal/base-images:abc'].map(parseNormalizedReference),
    push: parseNormalizedReference(repos.base),
    workspaceDomain: 'reg.internal',
  });
  const file = JSON.parse(authFileJson(entries)) as { auths: Record<string, { auth: string }> };
  assert.deepEqual(Object.keys(file.auths).sort(), [
    'docker.io/library/busybox',
    'quay.io/team/tool',
    'reg.internal/base-images',
  ]);
  assert.equal(
    Buffer.from(file.auths['reg.internal/base-images']!.auth, 'base64').toString(),
    'install:install-secret',
  );
  assert.equal(
    Buffer.from(file.auths['docker.io/library/busybox']!.auth, 'base64').toString(),
    'hub:hub-secret',
  );
  const secrets = secretsOf(entries);
  assert.ok(
    secrets.includes('install-secret') &&
      secrets.includes('qtoken') &&
      secrets.includes(b64('hub:hub-secret')),
  );
});

test("a system registry's credentials serve every request's pulls there, and only the repositories it names", async () => {
  // `strata up`: no mode from the request, yet its base image on the system's own registry is pulled.
  const policy = new AuthPolicy(
    { mode: { kind: 'none' }, additional: {} },
    repos,
    installation,
    new Set(['reg.internal']),
  );
  assert.ok(policy.allows('reg.internal'));
  assert.ok(!policy.allows('docker.io'));
  assert.deepEqual(await policy.forDomain('reg.internal'), {
    kind: 'basic',
    username: 'install',
    password: 'install-secret',
  });
  const entries = await buildAuthEntries({
    policy,
    installation,
    pulls: ['reg.internal/base/busybox:latest', 'busybox'].map(parseNormalizedReference),
    push: parseNormalizedReference(repos.base),
    workspaceDomain: 'reg.internal',
  });
  assert.deepEqual(entries.map((e) => e.repository).sort(), [
    'reg.internal/base-images',
    'reg.internal/base/busybox',
  ]);
});
