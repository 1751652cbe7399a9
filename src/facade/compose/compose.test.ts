import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { isFailedPrecondition, isInvalidArgument } from '../../errors.ts';
import { digestOf } from '../../oci/digest.ts';
import {
  type ImageConfig,
  type ImageManifest,
  parseImageConfig,
  parseManifest,
  serializeJson,
} from '../../oci/manifest.ts';
import { MediaType } from '../../oci/media-types.ts';
import type { ImageSpec } from '../spec.ts';
import { ANNOTATION_IMAGE_REF, ANNOTATION_IMAGE_SIZE, compose, newestCreated } from './compose.ts';
import type { ImageView } from './image.ts';
import type { Addition } from './layers.ts';
import { specAdditions, staticImageAddition } from './spec-additions.ts';
import { fixtureImage, layerDiffId, layerDigest, layerSize } from './test-fixtures.ts';

const BASE_REF = 'registry.example/base/ubuntu:22.04';
const TAR = new TextEncoder().encode('pretend this is a tar');

const base = fixtureImage({
  layers: ['b1', 'b2'],
  env: ['PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin', 'HOME=/root'],
  created: '2024-03-01T10:00:00Z',
  history: [
    { created: '2024-03-01T09:00:00Z', created_by: 'ADD rootfs.tar /' },
    { created: '2024-03-01T10:00:00.5Z', created_by: 'ENV HOME=/root', empty_layer: true },
    { created: '2024-02-01T00:00:00Z', created_by: 'RUN apt-get install' },
  ],
});
const ide = fixtureImage({
  layers: ['ide1', 'ide2', 'ide3'],
  labels: { 'skip-n.registry-facade.gitpod.io': '1' },
  env: ['PATH=/ignored', 'GITPOD_ENV_APPEND_PATH=/ide/bin:', 'GITPOD_ENV_SET_EDITOR=code'],
});
const supervisor = fixtureImage({ layers: ['sup1'], env: ['GITPOD_ENV_SET_EDITOR=gp open'] });
const extA = fixtureImage({ layers: ['extA'] });
const extB = fixtureImage({ layers: ['extB1', 'extB2'], env: ['GITPOD_ENV_PREPEND_PATH=:/ext/bin'] });
const staticImg = fixtureImage({ layers: ['static1'], env: ['GITPOD_ENV_SET_GITPOD_STATIC=1'] });

const remoteDigest = digestOf('remote blob');
const remoteDiff = digestOf('remote tar');
const spec: ImageSpec = {
  baseRef: BASE_REF,
  ideRef: 'reg.example/ide/code:1',
  supervisorRef: 'reg.example/supervisor:2',
  ideLayerRefs: ['reg.example/ext/a:1', 'reg.example/ext/b:1'],
  contentLayers: [
    {
      kind: 'remote',
      url: 'https://storage.example/layer.tgz?token=secret',
      digest: remoteDigest,
      diffId: remoteDiff,
      mediaType: MediaType.ociLayerGzip,
      size: 4242,
    },
    { kind: 'direct', content: TAR },
  ],
};
const views: Record<string, ImageView> = {
  'reg.example/ide/code:1': ide,
  'reg.example/supervisor:2': supervisor,
  'reg.example/ext/a:1': extA,
  'reg.example/ext/b:1': extB,
};

function additions(s: ImageSpec = spec, withStatic = true): Addition[] {
  return specAdditions(
    s,
    (a) => views[a.ref] ?? assert.fail(`no view for ${a.ref}`),
    withStatic ? [staticImageAddition(staticImg, 'reg.example/static:1')] : [],
  );
}

function composeAll(b: ImageView = base, adds: Addition[] = additions()) {
  return compose(b, adds, { baseRef: BASE_REF });
}

describe('compose: layer order and diff_ids', () => {
  test('base → static → ide (after skip-n) → supervisor → each ide layer → content, diff_ids aligned', () => {
    const out = composeAll();
    const names = ['b1', 'b2', 'static1', 'ide2', 'ide3', 'sup1', 'extA', 'extB1', 'extB2'];
    const wantDigests = [...names.map(layerDigest), remoteDigest, digestOf(TAR)];
    const wantDiffIds = [...names.map(layerDiffId), remoteDiff, digestOf(TAR)];
    assert.deepEqual(
      out.manifest.layers.map((l) => l.digest),
      wantDigests,
    );
    assert.deepEqual(out.config.rootfs.diff_ids, wantDiffIds);
    assert.deepEqual(
      out.layers.map((l) => l.diffId),
      wantDiffIds,
    );
    assert.deepEqual(
      out.layers.map((l) => l.origin.kind),
      ['base', 'base', 'image', 'image', 'image', 'image', 'image', 'image', 'image', 'remote', 'direct'],
    );
    assert.deepEqual(out.layers[3]!.origin, { kind: 'image', ref: 'reg.example/ide/code:1' });
    assert.deepEqual(out.layers[9]!.origin, {
      kind: 'remote',
      url: spec.contentLayers[0]!.kind === 'remote' ? spec.contentLayers[0]!.url : '',
    });
  });

  test('empty refs are skipped; base alone composes to the base layers', () => {
    const bare: ImageSpec = {
      baseRef: BASE_REF,
      ideRef: '',
      supervisorRef: '',
      ideLayerRefs: [''],
      contentLayers: [],
    };
    const out = compose(base, additions(bare, false), { baseRef: BASE_REF });
    assert.deepEqual(out.manifest.layers, base.manifest.layers);
    assert.deepEqual(out.config.rootfs.diff_ids, base.config.rootfs.diff_ids);
    assert.deepEqual(out.config.history, base.config.history);
    assert.deepEqual(out.config.config, base.config.config);
  });

  test('content layers: remote keeps its descriptor with the URL, direct is an uncompressed tar', () => {
    const out = composeAll();
    const [remote, direct] = out.manifest.layers.slice(-2);
    assert.deepEqual(remote, {
      mediaType: MediaType.ociLayerGzip,
      digest: remoteDigest,
      size: 4242,
      urls: ['https://storage.example/layer.tgz?token=secret'],
    });
    assert.deepEqual(direct, { mediaType: MediaType.ociLayer, digest: digestOf(TAR), size: TAR.byteLength });
    const origin = out.layers.at(-1)!.origin;
    assert.equal(origin.kind, 'direct');
    assert.equal(origin.kind === 'direct' && origin.content, TAR);
  });

  test('content layers without urls: the remote descriptor leaves the URL out, nothing else changes', () => {
    const adds = specAdditions(spec, (a) => views[a.ref] ?? assert.fail(`no view for ${a.ref}`), [], {
      contentLayerUrls: false,
    });
    const out = compose(base, adds, { baseRef: BASE_REF });
    const remote = out.manifest.layers.at(-2);
    assert.deepEqual(remote, { mediaType: MediaType.ociLayerGzip, digest: remoteDigest, size: 4242 });
    assert.equal(JSON.stringify(out.manifest).includes('token=secret'), false);
    const withUrls = compose(base, additions(spec, false), { baseRef: BASE_REF });
    assert.deepEqual(out.config.rootfs.diff_ids, withUrls.config.rootfs.diff_ids);
  });

  test('a remote content layer without diffId uses its digest as diff_id', () => {
    const s: ImageSpec = {
      ...spec,
      ideRef: '',
      supervisorRef: '',
      ideLayerRefs: [],
      contentLayers: [
        {
          kind: 'remote',
          url: 'https://s.example/l.tar',
          digest: remoteDigest,
          diffId: '',
          mediaType: MediaType.ociLayer,
          size: 7,
        },
      ],
    };
    const out = compose(base, additions(s, false), { baseRef: BASE_REF });
    assert.equal(out.config.rootfs.diff_ids.at(-1), remoteDigest);
  });
});

describe('compose: env', () => {
  test('modifiers apply in layer-source order over the base env; unprefixed vars of added images are ignored', () => {
    const out = composeAll();
    assert.deepEqual(out.config.config?.Env, [
      'PATH=/ide/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin:/ext/bin',
      'HOME=/root',
      'GITPOD_STATIC=1',
      'EDITOR=gp open',
    ]);
  });

  test('no modifiers: the base env is left exactly as it was', () => {
    const out = compose(base, [staticImageAddition(extA, 'reg.example/ext/a:1')], { baseRef: BASE_REF });
    assert.deepEqual(out.config.config, base.config.config);
  });

  test('a base without config.Env gets one when modifiers exist', () => {
    const noEnv = fixtureImage({ layers: ['b1'] });
    const out = compose(noEnv, [staticImageAddition(ide, 'reg.example/ide/code:1')], { baseRef: BASE_REF });
    assert.deepEqual(out.config.config?.Env, ['PATH=/ide/bin:', 'EDITOR=code']);
  });

  test('the base view is not mutated', () => {
    const before = JSON.stringify(base);
    composeAll();
    assert.equal(JSON.stringify(base), before);
  });
});

describe('compose: annotations', () => {
  test('size is the sum of the base layer sizes only; ref is the base ref verbatim; base annotations kept', () => {
    const annotated = fixtureImage({
      layers: ['b1', 'b2'],
      manifestExtra: { annotations: { 'org.opencontainers.image.source': 'https://x.example/repo' } },
    });
    const out = compose(annotated, additions(), { baseRef: 'ubuntu' });
    assert.deepEqual(out.manifest.annotations, {
      'org.opencontainers.image.source': 'https://x.example/repo',
      [ANNOTATION_IMAGE_SIZE]: String(layerSize('b1') + layerSize('b2')),
      [ANNOTATION_IMAGE_REF]: 'ubuntu',
    });
  });

  test('a base with no layers has size "0"', () => {
    const empty = fixtureImage({ layers: [] });
    assert.equal(
      compose(empty, [], { baseRef: BASE_REF }).manifest.annotations?.[ANNOTATION_IMAGE_SIZE],
      '0',
    );
  });
});

describe('compose: history', () => {
  test('one entry per added layer, after the base history, naming its source', () => {
    const out = composeAll();
    const history = out.config.history ?? [];
    const added = history.slice(base.config.history!.length);
    assert.deepEqual(history.slice(0, 3), base.config.history);
    assert.equal(added.length, out.layers.length - 2);
    assert.deepEqual(
      added.map((h) => h.created_by),
      [
        'strata: static reg.example/static:1',
        'strata: ide reg.example/ide/code:1',
        'strata: ide reg.example/ide/code:1',
        'strata: supervisor reg.example/supervisor:2',
        'strata: ide-layer reg.example/ext/a:1',
        'strata: ide-layer reg.example/ext/b:1',
        'strata: ide-layer reg.example/ext/b:1',
        `strata: content layer 0 (remote ${remoteDigest})`,
        'strata: content layer 1 (direct)',
      ],
    );
    assert.deepEqual(
      added.map((h) => h.comment),
      [
        undefined,
        'layer 1 of 2',
        'layer 2 of 2',
        undefined,
        undefined,
        'layer 1 of 2',
        'layer 2 of 2',
        undefined,
        undefined,
      ],
    );
    assert.ok(added.every((h) => h.empty_layer === undefined));
    assert.ok(!JSON.stringify(history).includes('token=secret'), 'no content-layer URL in the history');
    // Non-empty history entries now match the layers.
    assert.equal(history.filter((h) => !h.empty_layer).length, out.layers.length);
  });

  test('created is the newest timestamp of the base (config or history), as written', () => {
    assert.equal(newestCreated(base.config), '2024-03-01T10:00:00.5Z');
    const out = composeAll();
    assert.ok(out.config.history!.slice(3).every((h) => h.created === '2024-03-01T10:00:00.5Z'));
    assert.equal(out.config.created, '2024-03-01T10:00:00Z', 'the image created time is the base one');
  });

  test('a base without history gets none added: entries would pair with the wrong layers', () => {
    // buildah commit of a container from such an image failed: "history lists 7 non-empty layers,
    // but we have 8 layers on disk".
    for (const history of [undefined, [{ created_by: 'ADD only the second layer' }]]) {
      const plain = fixtureImage({ layers: ['b1', 'b2'], ...(history && { history }) });
      const out = compose(plain, additions(spec, false), { baseRef: BASE_REF });
      assert.deepEqual(out.config.history, plain.config.history);
      assert.equal('history' in out.config, history !== undefined);
    }
    // A base with no layers and no history is accounted for: each added layer gets its entry.
    const empty = compose(fixtureImage({ layers: [] }), additions(spec, false), { baseRef: BASE_REF });
    assert.equal(empty.config.history?.length, empty.layers.length);
  });

  test('no timestamp in the base: entries have no created; an explicit one wins', () => {
    const plain = fixtureImage({ layers: ['b1'], history: [{ created_by: 'ADD b1' }] });
    const out = compose(plain, additions(spec, false), { baseRef: BASE_REF });
    assert.equal(out.config.history!.length, out.layers.length);
    assert.ok(out.config.history!.slice(1).every((h) => !('created' in h)));
    const fixed = compose(plain, additions(spec, false), {
      baseRef: BASE_REF,
      historyCreated: '1970-01-01T00:00:00Z',
    });
    assert.ok(fixed.config.history!.slice(1).every((h) => h.created === '1970-01-01T00:00:00Z'));
  });
});

describe('compose: fields we do not know survive', () => {
  const dockerBase = fixtureImage({
    docker: true,
    layers: ['d1'],
    env: ['PATH=/bin'],
    containerExtra: {
      Healthcheck: { Test: ['CMD', 'true'], Interval: 30000000000 },
      OnBuild: ['RUN echo'],
      Shell: ['/bin/bash', '-c'],
      StopTimeout: 10,
      Hostname: '',
    },
    configExtra: {
      container_config: { Cmd: ['/bin/sh', '-c', '#(nop) CMD'], Hostname: 'abc' },
      docker_version: '20.10.7',
      container: 'c0ffee',
      foo: { nested: [1, 'two', null] },
    },
    manifestExtra: { 'x-custom': 'kept' },
  });

  test('Docker-only and unknown config and manifest fields are preserved', () => {
    const out = compose(dockerBase, additions(), { baseRef: BASE_REF });
    const cfg = JSON.parse(new TextDecoder().decode(out.configBytes)) as Record<
      string,
      Record<string, unknown>
    >;
    assert.deepEqual(cfg.config!.Healthcheck, { Test: ['CMD', 'true'], Interval: 30000000000 });
    assert.deepEqual(cfg.config!.OnBuild, ['RUN echo']);
    assert.deepEqual(cfg.config!.Shell, ['/bin/bash', '-c']);
    assert.equal(cfg.config!.StopTimeout, 10);
    assert.equal(cfg.config!.Hostname, '');
    assert.deepEqual(cfg.container_config, { Cmd: ['/bin/sh', '-c', '#(nop) CMD'], Hostname: 'abc' });
    assert.equal(cfg.docker_version, '20.10.7');
    assert.equal(cfg.container, 'c0ffee');
    assert.deepEqual(cfg.foo, { nested: [1, 'two', null] });
    const man = JSON.parse(new TextDecoder().decode(out.manifestBytes)) as Record<string, unknown>;
    assert.equal(man['x-custom'], 'kept');
  });

  test('key order of the base config is kept (only history may be appended at the end)', () => {
    const out = compose(dockerBase, additions(), { baseRef: BASE_REF });
    const keys = Object.keys(JSON.parse(new TextDecoder().decode(out.configBytes)) as object);
    // dockerBase has no history, so none is added (see compose: history).
    assert.deepEqual(keys, Object.keys(dockerBase.config));
    const noLayers = fixtureImage({ docker: true, layers: [], configExtra: { docker_version: '20.10.7' } });
    const composed = compose(noLayers, additions(), { baseRef: BASE_REF });
    const composedKeys = Object.keys(JSON.parse(new TextDecoder().decode(composed.configBytes)) as object);
    assert.deepEqual(composedKeys, [...Object.keys(noLayers.config), 'history']);
  });

  test('config descriptor: new digest and size, base urls dropped, other fields kept; subject dropped', () => {
    const withUrls = fixtureImage({
      layers: ['b1'],
      manifestExtra: {
        subject: { mediaType: MediaType.ociManifest, digest: digestOf('subject'), size: 10 },
      },
    });
    withUrls.manifest.config = {
      ...withUrls.manifest.config,
      urls: ['https://cdn.example/c'],
      annotations: { a: 'b' },
    };
    const out = compose(withUrls, [], { baseRef: BASE_REF });
    assert.deepEqual(out.manifest.config, {
      mediaType: MediaType.ociConfig,
      digest: out.configDigest,
      size: out.configBytes.byteLength,
      annotations: { a: 'b' },
    });
    assert.equal(out.manifest.subject, undefined);
  });

  test("the base config's embedded data is dropped: it is the base config's bytes, not ours", () => {
    const withData = fixtureImage({ layers: ['b1'], history: [{ created_by: 'ADD b1' }] });
    const baseConfigBytes = serializeJson(withData.config);
    withData.manifest.config = {
      ...withData.manifest.config,
      data: Buffer.from(baseConfigBytes).toString('base64'),
    };
    const out = compose(withData, additions(spec, false), { baseRef: BASE_REF });
    assert.equal(out.manifest.config.data, undefined);
    // What a client (or our own parser) reads back is a valid manifest.
    assert.equal(parseManifest(out.manifestBytes).kind, 'manifest');
  });
});

describe('compose: size', () => {
  test('a composed manifest clients could not take is refused, naming its size', () => {
    // Each image parses (under 4 MiB of manifest); together their layers do not fit in one.
    const many = (prefix: string, n: number) => Array.from({ length: n }, (_, i) => `${prefix}${i}`);
    const big = fixtureImage({ layers: many('b', 16_000) });
    const more = fixtureImage({ layers: many('m', 16_000) });
    assert.ok(compose(big, [], { baseRef: BASE_REF }).manifestBytes.byteLength < 4 * 2 ** 20);
    assert.throws(
      () => compose(big, [staticImageAddition(more, 'reg.example/more:1')], { baseRef: BASE_REF }),
      (err: unknown) =>
        isFailedPrecondition(err) &&
        /composed image's manifest would be \d+ bytes \(32000 layers\); clients take at most 4194304/.test(
          (err as Error).message,
        ),
    );
  });
});

describe('compose: media types follow the base manifest', () => {
  test('Docker base: OCI layers of added images and content become Docker types; mediaType is set', () => {
    const dockerBase = fixtureImage({ docker: true, layers: ['d1'] });
    const out = compose(dockerBase, additions(), { baseRef: BASE_REF });
    assert.equal(out.family, 'docker');
    assert.equal(out.mediaType, MediaType.dockerManifest);
    assert.equal(out.manifest.mediaType, MediaType.dockerManifest);
    assert.equal(out.manifest.config.mediaType, MediaType.dockerConfig);
    const types = new Set(out.manifest.layers.map((l) => l.mediaType));
    assert.deepEqual([...types].sort(), [MediaType.dockerLayer, MediaType.dockerLayerGzip].sort());
    assert.equal(out.layers.at(-1)!.descriptor.mediaType, MediaType.dockerLayer);
  });

  test('OCI base: Docker layers of added images become OCI types', () => {
    const dockerIde = fixtureImage({
      docker: true,
      layers: ['di1', { name: 'di2', mediaType: MediaType.dockerLayerForeignGzip }],
    });
    const out = compose(base, [staticImageAddition(dockerIde, 'reg.example/d:1')], { baseRef: BASE_REF });
    assert.equal(out.mediaType, MediaType.ociManifest);
    assert.deepEqual(
      out.manifest.layers.map((l) => l.mediaType),
      [
        MediaType.ociLayerGzip,
        MediaType.ociLayerGzip,
        MediaType.ociLayerGzip,
        MediaType.ociLayerNondistributableGzip,
      ],
    );
  });

  test('Docker base with a zstd layer added: the image is OCI, since Docker schema2 has no zstd type', () => {
    // skopeo and buildah refuse a schema2 manifest listing `…rootfs.diff.tar.zstd` ("unsupported docker
    // v2s2 media type"); containerd takes the OCI form as well.
    const dockerBase = fixtureImage({ docker: true, layers: ['d1'] });
    const zstdIde = fixtureImage({ layers: [{ name: 'z1', mediaType: MediaType.ociLayerZstd }] });
    const out = compose(dockerBase, [staticImageAddition(zstdIde, 'reg.example/z:1')], { baseRef: BASE_REF });
    assert.equal(out.family, 'oci');
    assert.equal(out.mediaType, MediaType.ociManifest);
    assert.equal(out.manifest.mediaType, MediaType.ociManifest);
    assert.equal(out.manifest.config.mediaType, MediaType.ociConfig);
    assert.deepEqual(
      out.manifest.layers.map((l) => l.mediaType),
      [MediaType.ociLayerGzip, MediaType.ociLayerZstd],
    );
    const parsed = parseManifest(out.manifestBytes);
    assert.equal(parsed.mediaType, MediaType.ociManifest);
    // A base that is Docker and has a containerd-style zstd layer itself comes out OCI too.
    const zstdBase = fixtureImage({
      docker: true,
      layers: [{ name: 'dz', mediaType: MediaType.dockerLayerZstd }],
    });
    const own = compose(zstdBase, [], { baseRef: BASE_REF });
    assert.equal(own.mediaType, MediaType.ociManifest);
    assert.equal(own.manifest.layers[0]!.mediaType, MediaType.ociLayerZstd);
  });

  test('types without an equivalent are kept', () => {
    const odd = fixtureImage({ layers: [{ name: 'z', mediaType: MediaType.ociLayerNondistributableZstd }] });
    const out = compose(fixtureImage({ docker: true, layers: [] }), [staticImageAddition(odd, 'r/odd')], {
      baseRef: BASE_REF,
    });
    assert.equal(out.manifest.layers[0]!.mediaType, MediaType.ociLayerNondistributableZstd);
  });

  test('an OCI manifest without mediaType (config says OCI) gets the OCI manifest type', () => {
    const noType = fixtureImage({ layers: ['b1'], manifestExtra: { mediaType: undefined } });
    assert.equal(noType.manifest.mediaType, undefined);
    assert.equal(compose(noType, [], { baseRef: BASE_REF }).manifest.mediaType, MediaType.ociManifest);
  });

  test('the media type the view was served with decides when the manifest names none', () => {
    const noType = fixtureImage({ layers: ['b1'], manifestExtra: { mediaType: undefined } });
    const out = compose({ ...noType, mediaType: MediaType.dockerManifest }, [], { baseRef: BASE_REF });
    assert.equal(out.manifest.mediaType, MediaType.dockerManifest);
  });
});

describe('compose: output is valid and deterministic', () => {
  test('bytes parse back; digests are of the bytes; manifest points at the config', () => {
    for (const b of [base, fixtureImage({ docker: true, layers: ['d1', 'd2'], env: ['A=1'] })]) {
      const out = composeAll(b);
      const parsed = parseManifest(out.manifestBytes, out.mediaType);
      assert.equal(parsed.kind, 'manifest');
      assert.equal(parsed.mediaType, out.mediaType);
      const cfg: ImageConfig = parseImageConfig(out.configBytes);
      assert.equal(
        cfg.rootfs.diff_ids.length,
        (parsed as { manifest: ImageManifest }).manifest.layers.length,
      );
      assert.equal(out.manifestDigest, digestOf(out.manifestBytes));
      assert.equal(out.configDigest, digestOf(out.configBytes));
      assert.equal(out.manifest.config.digest, out.configDigest);
      assert.deepEqual(JSON.parse(new TextDecoder().decode(out.manifestBytes)), out.manifest);
    }
  });

  test('composing twice from equal inputs gives identical bytes and digests', () => {
    const a = composeAll();
    const b = compose(structuredClone(base), structuredClone(additions()), { baseRef: BASE_REF });
    assert.deepEqual(a.manifestBytes, b.manifestBytes);
    assert.deepEqual(a.configBytes, b.configBytes);
    assert.equal(a.manifestDigest, b.manifestDigest);
  });

  test('different inputs give different digests', () => {
    const a = composeAll();
    const b = compose(base, additions(), { baseRef: `${BASE_REF}-other` });
    assert.notEqual(a.manifestDigest, b.manifestDigest);
    assert.equal(a.configDigest, b.configDigest, 'the ref only goes in the manifest');
  });
});

describe('compose: bad inputs', () => {
  const invalid = (fn: () => unknown, message: RegExp) =>
    assert.throws(fn, (err: unknown) => isInvalidArgument(err) && message.test((err as Error).message));

  test('base with more layers than diff_ids', () => {
    const bad = fixtureImage({ layers: ['b1', 'b2'], diffIds: [layerDiffId('b1')] });
    invalid(
      () => compose(bad, [], { baseRef: BASE_REF }),
      /base image: manifest lists 2 layers but the config has 1 diff_ids/,
    );
  });

  test('base with fewer layers than diff_ids', () => {
    const bad = fixtureImage({ layers: [], diffIds: [layerDiffId('b1')] });
    invalid(
      () => compose(bad, [], { baseRef: BASE_REF }),
      /manifest lists 0 layers but the config has 1 diff_ids/,
    );
  });

  test('added image with mismatched diff_ids', () => {
    const bad = fixtureImage({ layers: ['i1', 'i2'], diffIds: [layerDiffId('i1')] });
    invalid(
      () => staticImageAddition(bad, 'r/bad:1'),
      /image r\/bad:1: manifest lists 2 layers but the config has 1 diff_ids/,
    );
  });

  test('missing config, missing rootfs, missing config descriptor', () => {
    invalid(
      () =>
        compose({ manifest: base.manifest, config: undefined as unknown as ImageConfig }, [], {
          baseRef: BASE_REF,
        }),
      /base image: config is missing/,
    );
    const noRootfs = structuredClone(base);
    delete (noRootfs.config as Partial<ImageConfig>).rootfs;
    invalid(() => compose(noRootfs, [], { baseRef: BASE_REF }), /base image: config has no rootfs.diff_ids/);
    const noConfigDesc = structuredClone(base);
    delete (noConfigDesc.manifest as Partial<ImageManifest>).config;
    invalid(
      () => compose(noConfigDesc, [], { baseRef: BASE_REF }),
      /base image: manifest has no config descriptor/,
    );
  });

  test('a diff_id that is not a digest', () => {
    const bad = structuredClone(base);
    (bad.config.rootfs.diff_ids as string[])[1] = 'sha256:short';
    invalid(
      () => compose(bad, [], { baseRef: BASE_REF }),
      /base image: rootfs.diff_ids\[1\] is not a valid digest/,
    );
  });
});
