import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { isInvalidArgument } from '../errors.ts';
import { digestOf } from '../oci/digest.ts';
import {
  addedImageRefs,
  type ContentLayer,
  type ImageSpec,
  MAX_SPEC_LIST_ENTRIES,
  validateImageSpec,
} from './spec.ts';

const D1 = digestOf('layer one');
const D2 = digestOf('layer one, uncompressed');

function spec(over: Partial<ImageSpec> = {}): ImageSpec {
  return {
    baseRef: 'registry.example:5000/base/ubuntu:22.04',
    ideRef: 'eu.gcr.io/gitpod/ide/code:commit-abc',
    supervisorRef: 'eu.gcr.io/gitpod/supervisor@' + D1,
    ideLayerRefs: ['eu.gcr.io/gitpod/ide/code-ext:1'],
    contentLayers: [
      {
        kind: 'remote',
        url: 'https://storage.example/l.tgz',
        digest: D1,
        diffId: D2,
        mediaType: 'application/vnd.oci.image.layer.v1.tar+gzip',
        size: 10,
      },
      { kind: 'direct', content: new Uint8Array([1, 2, 3]) },
    ],
    ...over,
  };
}

function remote(over: Partial<Extract<ContentLayer, { kind: 'remote' }>>): ImageSpec {
  return spec({
    contentLayers: [
      {
        kind: 'remote',
        url: 'https://storage.example/l.tgz',
        digest: D1,
        diffId: D2,
        mediaType: 'application/vnd.oci.image.layer.v1.tar+gzip',
        size: 10,
        ...over,
      },
    ],
  });
}

function rejects(s: ImageSpec, message: RegExp, opts?: Parameters<typeof validateImageSpec>[1]): void {
  assert.throws(
    () => validateImageSpec(s, opts),
    (err: unknown) => isInvalidArgument(err) && message.test((err as Error).message),
  );
}

describe('validateImageSpec', () => {
  test('a full, good spec passes and is returned', () => {
    const s = spec();
    assert.equal(validateImageSpec(s), s);
  });

  test('base only, with Docker Hub short names', () => {
    validateImageSpec({
      baseRef: 'ubuntu',
      ideRef: '',
      supervisorRef: '',
      ideLayerRefs: [],
      contentLayers: [],
    });
  });

  test('refs', () => {
    rejects(spec({ baseRef: '' }), /baseRef is required/);
    rejects(spec({ baseRef: 'Upper/Case' }), /baseRef: repository name must be lowercase/);
    rejects(spec({ ideRef: 'ide:bad tag' }), /ideRef: invalid tag format/);
    rejects(spec({ supervisorRef: 'sup@sha256:nothex' }), /supervisorRef: invalid digest format/);
    rejects(spec({ ideLayerRefs: ['ok/one', 'bad//two'] }), /ideLayerRefs\[1\]: invalid reference format/);
  });

  test('remote content layers', () => {
    rejects(remote({ url: 'not a url' }), /contentLayers\[0\]: url "not a url" is not a valid URL/);
    rejects(
      remote({ url: 'http://storage.example/l.tgz' }),
      /url must be https .* got http:\/\/storage\.example/,
    );
    rejects(remote({ url: 'ftp://storage.example/l.tgz' }), /url must be https/);
    rejects(remote({ digest: 'sha256:abc' }), /contentLayers\[0\]\.digest: invalid sha256 digest/);
    rejects(remote({ diffId: 'md5:abc' }), /contentLayers\[0\]\.diffId: unsupported digest algorithm/);
    rejects(
      remote({ mediaType: 'application/vnd.docker.image.rootfs.diff.tar.gzip' }),
      /mediaType .* is not one of/,
    );
    rejects(remote({ mediaType: '' }), /mediaType "" is not one of/);
    rejects(remote({ size: 0 }), /size must be a positive integer, got 0/);
    rejects(remote({ size: -1 }), /size must be a positive integer/);
    rejects(remote({ size: 1.5 }), /size must be a positive integer/);
    rejects(remote({ diffId: '' }), /diffId is required for a compressed layer/);
  });

  test('empty diffId is fine for an uncompressed tar', () => {
    validateImageSpec(remote({ diffId: '', mediaType: 'application/vnd.oci.image.layer.v1.tar' }));
  });

  test('http only for hosts the predicate allows, asked with host:port', () => {
    const asked: string[] = [];
    const allow = (host: string) => {
      asked.push(host);
      return host === '127.0.0.1:8080';
    };
    validateImageSpec(remote({ url: 'http://127.0.0.1:8080/l.tgz' }), { allowHttpHost: allow });
    rejects(remote({ url: 'http://127.0.0.1:9090/l.tgz' }), /url must be https/, { allowHttpHost: allow });
    assert.deepEqual(asked, ['127.0.0.1:8080', '127.0.0.1:9090']);
  });

  test('direct content layers', () => {
    rejects(
      spec({ contentLayers: [{ kind: 'direct', content: new Uint8Array() }] }),
      /contentLayers\[0\]: direct layer content is empty/,
    );
    rejects(
      spec({ contentLayers: [{ kind: 'other' } as unknown as ContentLayer] }),
      /unknown layer kind "other"/,
    );
  });

  test('the lists are bounded: each added image is fetched while the first client waits', () => {
    const n = MAX_SPEC_LIST_ENTRIES;
    const refs = (k: number) => Array.from({ length: k }, (_, i) => `registry.example/layer-${i}:1`);
    const direct = (k: number): ContentLayer[] =>
      Array.from({ length: k }, () => ({ kind: 'direct', content: new Uint8Array([1]) }));
    validateImageSpec(spec({ ideLayerRefs: refs(n), contentLayers: direct(n) }));
    rejects(
      spec({ ideLayerRefs: refs(n + 1) }),
      new RegExp(`ideLayerRefs has ${n + 1} entries; at most ${n}`),
    );
    rejects(spec({ contentLayers: direct(n + 1) }), new RegExp(`contentLayers has ${n + 1} entries`));
  });
});

describe('addedImageRefs', () => {
  test('ide, supervisor, then each ide layer ref; empty refs skipped', () => {
    assert.deepEqual(addedImageRefs(spec({ ideLayerRefs: ['a/one', '', 'a/two'] })), [
      { role: 'ide', ref: 'eu.gcr.io/gitpod/ide/code:commit-abc' },
      { role: 'supervisor', ref: `eu.gcr.io/gitpod/supervisor@${D1}` },
      { role: 'ide-layer', ref: 'a/one' },
      { role: 'ide-layer', ref: 'a/two' },
    ]);
    assert.deepEqual(addedImageRefs(spec({ ideRef: '', supervisorRef: '', ideLayerRefs: [] })), []);
  });
});
