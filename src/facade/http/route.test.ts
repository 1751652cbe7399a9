import assert from 'node:assert/strict';
import { test } from 'node:test';
import { OciHttpError } from './oci-errors.ts';
import { normalizePrefix, parseRoute } from './route.ts';

const D = `sha256:${'a'.repeat(64)}`;

test('routes', () => {
  assert.deepEqual(parseRoute('/v2/', ''), { kind: 'base' });
  assert.deepEqual(parseRoute('/v2/remote/ws-1/manifests/latest', ''), {
    kind: 'manifest',
    name: { provider: 'remote', id: 'ws-1' },
    reference: 'latest',
    repository: 'remote/ws-1',
  });
  assert.deepEqual(parseRoute(`/v2/gitpod/remote/a/b/blobs/${D}`, 'gitpod/'), {
    kind: 'blob',
    name: { provider: 'remote', id: 'a/b' },
    digest: D,
    repository: 'gitpod/remote/a/b',
  });
  assert.equal(parseRoute('/v2/remote/x/blobs/uploads/', '').kind, 'upload');
  assert.deepEqual(parseRoute('/v2/gitpod/fixed/a/tags/list', 'gitpod/'), {
    kind: 'tags',
    name: { provider: 'fixed', id: 'a' },
    repository: 'gitpod/fixed/a',
  });
  assert.equal(parseRoute('/v2/remote/x/tags/other', '').kind, 'unknown');
  assert.equal(parseRoute('/v2/_catalog', '').kind, 'catalog');
  assert.equal(parseRoute('/elsewhere', '').kind, 'unknown');
});

test('bad names and references', () => {
  const code = (path: string, prefix = '') => {
    try {
      parseRoute(path, prefix);
      return 'none';
    } catch (err) {
      assert.ok(err instanceof OciHttpError);
      return err.oci.code;
    }
  };
  assert.equal(code('/v2/remote/UPPER/manifests/latest'), 'NAME_INVALID');
  assert.equal(code(`/v2/remote/${'a'.repeat(300)}/manifests/latest`), 'NAME_INVALID');
  assert.equal(code('/v2/single/manifests/latest'), 'NAME_UNKNOWN');
  assert.equal(code('/v2/remote/x/manifests/latest', 'gitpod/'), 'NAME_UNKNOWN');
  assert.equal(code('/v2/remote/x/manifests/bad!tag'), 'MANIFEST_INVALID');
  assert.equal(code('/v2/remote/UPPER/tags/list'), 'NAME_INVALID');
  assert.equal(code('/v2/single/tags/list'), 'NAME_UNKNOWN');
});

test('prefixes', () => {
  assert.equal(normalizePrefix(''), '');
  assert.equal(normalizePrefix('/gitpod/'), 'gitpod/');
  assert.equal(normalizePrefix('a/b'), 'a/b/');
  assert.throws(() => normalizePrefix('Bad'));
  assert.throws(() => normalizePrefix('/'));
});
