import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import fc from 'fast-check';
import { isInvalidArgument } from '../errors.ts';
import { digestOf } from './digest.ts';
import {
  MAX_CONFIG_BYTES,
  MAX_MANIFEST_BYTES,
  type ParsedManifest,
  parseImageConfig,
  parseManifest,
  serializeJson,
} from './manifest.ts';
import { MediaType } from './media-types.ts';

const enc = (v: unknown): Uint8Array =>
  new TextEncoder().encode(typeof v === 'string' ? v : JSON.stringify(v));
const hex = (n: number) => n.toString(16).padStart(64, '0');
const desc = (mediaType: string, n: number, extra: Record<string, unknown> = {}) => ({
  mediaType,
  digest: `sha256:${hex(n)}`,
  size: n,
  ...extra,
});

const ociManifest = () => ({
  schemaVersion: 2,
  mediaType: MediaType.ociManifest,
  config: desc(MediaType.ociConfig, 1),
  layers: [desc(MediaType.ociLayerGzip, 2), desc(MediaType.ociLayerZstd, 3)],
});
const dockerManifest = () => ({
  schemaVersion: 2,
  mediaType: MediaType.dockerManifest,
  config: desc(MediaType.dockerConfig, 1),
  layers: [desc(MediaType.dockerLayerGzip, 2)],
});
const ociIndex = () => ({
  schemaVersion: 2,
  mediaType: MediaType.ociIndex,
  manifests: [
    desc(MediaType.ociManifest, 10, { platform: { os: 'linux', architecture: 'amd64' } }),
    desc(MediaType.ociManifest, 11, { platform: { os: 'linux', architecture: 'arm', variant: 'v7' } }),
  ],
});
const dockerList = () => ({
  schemaVersion: 2,
  mediaType: MediaType.dockerManifestList,
  manifests: [desc(MediaType.dockerManifest, 10, { platform: { os: 'linux', architecture: 'amd64' } })],
});

function rejects(fn: () => unknown, reason: RegExp): void {
  assert.throws(fn, (err: unknown) => {
    assert.ok(isInvalidArgument(err), `want InvalidArgument, got ${String(err)}`);
    assert.match((err as Error).message, reason);
    return true;
  });
}

function kindAndType(p: ParsedManifest): [string, string] {
  return [p.kind, p.mediaType];
}

describe('parseManifest accepts', () => {
  test('an OCI image manifest', () => {
    const p = parseManifest(enc(ociManifest()));
    assert.deepEqual(kindAndType(p), ['manifest', MediaType.ociManifest]);
    assert.ok(p.kind === 'manifest');
    assert.equal(p.manifest.layers.length, 2);
    assert.equal(p.manifest.config.digest, `sha256:${hex(1)}`);
  });
  test('a Docker schema2 manifest', () => {
    assert.deepEqual(kindAndType(parseManifest(enc(dockerManifest()))), [
      'manifest',
      MediaType.dockerManifest,
    ]);
  });
  test('an OCI index and a Docker manifest list', () => {
    const p = parseManifest(enc(ociIndex()));
    assert.deepEqual(kindAndType(p), ['index', MediaType.ociIndex]);
    assert.ok(p.kind === 'index');
    assert.deepEqual(p.index.manifests[1]?.platform, { os: 'linux', architecture: 'arm', variant: 'v7' });
    assert.deepEqual(kindAndType(parseManifest(enc(dockerList()))), ['index', MediaType.dockerManifestList]);
  });
  test('an empty layer list and an empty index (artifacts and empty indexes exist)', () => {
    assert.equal(parseManifest(enc({ ...ociManifest(), layers: [] })).kind, 'manifest');
    assert.equal(parseManifest(enc({ ...ociIndex(), manifests: [] })).kind, 'index');
  });
  test('OCI 1.1 subject, artifactType and annotations', () => {
    const m = {
      ...ociManifest(),
      artifactType: 'application/vnd.example.sbom+json',
      subject: desc(MediaType.ociManifest, 9),
      annotations: { 'org.opencontainers.image.created': '2024-01-01T00:00:00Z' },
    };
    const p = parseManifest(enc(m));
    assert.ok(p.kind === 'manifest');
    assert.equal(p.manifest.subject?.digest, `sha256:${hex(9)}`);
    const i = { ...ociIndex(), subject: desc(MediaType.ociManifest, 9), annotations: { a: 'b' } };
    assert.equal(parseManifest(enc(i)).kind, 'index');
  });

  describe('media type from body, Content-Type, or shape', () => {
    const noType = <T extends { mediaType?: string }>(doc: T) => {
      const { mediaType: _, ...rest } = doc;
      return rest;
    };
    const cases: [string, unknown, string | undefined, [string, string]][] = [
      ['body only', ociManifest(), undefined, ['manifest', MediaType.ociManifest]],
      [
        'body and same header',
        dockerManifest(),
        MediaType.dockerManifest,
        ['manifest', MediaType.dockerManifest],
      ],
      [
        'header with parameters',
        ociIndex(),
        `${MediaType.ociIndex}; charset=utf-8`,
        ['index', MediaType.ociIndex],
      ],
      ['header in other case', ociIndex(), MediaType.ociIndex.toUpperCase(), ['index', MediaType.ociIndex]],
      [
        'generic header ignored',
        dockerManifest(),
        'application/json',
        ['manifest', MediaType.dockerManifest],
      ],
      ['octet-stream ignored', ociIndex(), 'application/octet-stream', ['index', MediaType.ociIndex]],
      [
        'header only (docker)',
        noType(dockerManifest()),
        MediaType.dockerManifest,
        ['manifest', MediaType.dockerManifest],
      ],
      [
        'header only (list)',
        noType(dockerList()),
        MediaType.dockerManifestList,
        ['index', MediaType.dockerManifestList],
      ],
      ['shape: manifest', noType(ociManifest()), undefined, ['manifest', MediaType.ociManifest]],
      ['shape: index', noType(ociIndex()), undefined, ['index', MediaType.ociIndex]],
      ['shape with generic header', noType(ociIndex()), 'application/json', ['index', MediaType.ociIndex]],
      ['empty header', ociManifest(), '', ['manifest', MediaType.ociManifest]],
    ];
    for (const [name, doc, header, want] of cases) {
      test(name, () => assert.deepEqual(kindAndType(parseManifest(enc(doc), header)), want));
    }
  });

  test('exactly MAX_MANIFEST_BYTES', () => {
    const base = JSON.stringify({ ...ociManifest(), annotations: { pad: '' } });
    const padded = base.replace('"pad":""', `"pad":"${'x'.repeat(MAX_MANIFEST_BYTES - base.length)}"`);
    const bytes = enc(padded);
    assert.equal(bytes.byteLength, MAX_MANIFEST_BYTES);
    assert.equal(parseManifest(bytes).kind, 'manifest');
    rejects(() => parseManifest(enc(padded.replace('"pad":"', '"pad":"x'))), /more than the 4194304 allowed/);
  });
});

describe('parseManifest rejects', () => {
  const cases: [string, Uint8Array, string | undefined, RegExp][] = [
    ['empty bytes', new Uint8Array(0), undefined, /not valid JSON/],
    ['not JSON', enc('{"schemaVersion":2,'), undefined, /not valid JSON/],
    ['HTML error page', enc('<html>502</html>'), MediaType.ociManifest, /not valid JSON/],
    ['invalid UTF-8', new Uint8Array([0x7b, 0xff, 0x7d]), undefined, /not valid UTF-8/],
    ['an array', enc([ociManifest()]), undefined, /not a JSON object/],
    ['null', enc('null'), undefined, /not a JSON object/],
    ['a string', enc('"manifest"'), undefined, /not a JSON object/],
    ['a number', enc('2'), undefined, /not a JSON object/],
    [
      'schema1 by version',
      enc({ schemaVersion: 1, name: 'x', tag: 'y', fsLayers: [] }),
      undefined,
      /^schema1 manifests are not supported$/,
    ],
    [
      'schema1 by version with json header',
      enc({ schemaVersion: 1, fsLayers: [] }),
      'application/json',
      /^schema1 manifests are not supported$/,
    ],
    [
      'schema1 signed header',
      enc({ schemaVersion: 2, config: {} }),
      MediaType.dockerSchema1Signed,
      /^schema1 manifests are not supported$/,
    ],
    [
      'schema1 type in body',
      enc({ ...dockerManifest(), mediaType: MediaType.dockerSchema1Manifest }),
      undefined,
      /^schema1 manifests are not supported$/,
    ],
    [
      'missing schemaVersion',
      enc({ ...ociManifest(), schemaVersion: undefined }),
      undefined,
      /schemaVersion undefined/,
    ],
    ['schemaVersion 3', enc({ ...ociManifest(), schemaVersion: 3 }), undefined, /schemaVersion 3/],
    ['schemaVersion "2"', enc({ ...ociManifest(), schemaVersion: '2' }), undefined, /schemaVersion "2"/],
    [
      'mediaType not a string',
      enc({ ...ociManifest(), mediaType: 7 }),
      undefined,
      /mediaType must be a string/,
    ],
    [
      'body/header conflict',
      enc(ociManifest()),
      MediaType.dockerManifest,
      /says it is application\/vnd\.oci\.image\.manifest\.v1\+json but was served as/,
    ],
    ['manifest/index conflict', enc(ociManifest()), MediaType.ociIndex, /served as/],
    [
      'unknown body type',
      enc({ ...ociManifest(), mediaType: 'application/vnd.example+json' }),
      undefined,
      /unsupported manifest media type/,
    ],
    [
      'config type in body',
      enc({ ...ociManifest(), mediaType: MediaType.ociConfig }),
      undefined,
      /unsupported/,
    ],
    ['neither shape', enc({ schemaVersion: 2 }), undefined, /neither an image manifest nor an image index/],
    ['missing config', enc({ ...ociManifest(), config: undefined }), undefined, /has no config/],
    ['missing layers', enc({ ...ociManifest(), layers: undefined }), undefined, /has no layers/],
    ['layers not a list', enc({ ...ociManifest(), layers: {} }), undefined, /layers must be a list/],
    ['missing manifests', enc({ ...ociIndex(), manifests: undefined }), undefined, /has no manifests/],
    ['manifests not a list', enc({ ...ociIndex(), manifests: 'x' }), undefined, /manifests must be a list/],
    [
      'manifest with manifests (ambiguous)',
      enc({ ...ociManifest(), manifests: [] }),
      undefined,
      /must not have a manifests field/,
    ],
    [
      'index with config (ambiguous)',
      enc({ ...ociIndex(), config: desc(MediaType.ociConfig, 1) }),
      undefined,
      /must not have config/,
    ],
    [
      'index with layers (ambiguous)',
      enc({ ...ociIndex(), layers: [] }),
      undefined,
      /must not have config or layers/,
    ],
    [
      'header says manifest, body is an index',
      enc({ schemaVersion: 2, manifests: [] }),
      MediaType.ociManifest,
      /must not have a manifests field/,
    ],
    [
      'config not an object',
      enc({ ...ociManifest(), config: 'sha256:x' }),
      undefined,
      /config: not an object/,
    ],
    [
      'config bad digest',
      enc({ ...ociManifest(), config: { ...desc(MediaType.ociConfig, 1), digest: 'sha256:abc' } }),
      undefined,
      /config: invalid sha256 digest/,
    ],
    [
      'config negative size',
      enc({ ...ociManifest(), config: { ...desc(MediaType.ociConfig, 1), size: -1 } }),
      undefined,
      /invalid size/,
    ],
    [
      'config fractional size',
      enc({ ...ociManifest(), config: { ...desc(MediaType.ociConfig, 1), size: 1.5 } }),
      undefined,
      /invalid size/,
    ],
    [
      'config huge size',
      enc({ ...ociManifest(), config: { ...desc(MediaType.ociConfig, 1), size: 2 ** 53 } }),
      undefined,
      /invalid size/,
    ],
    [
      'config bad media type',
      enc({ ...ociManifest(), config: { ...desc('x', 1) } }),
      undefined,
      /invalid mediaType/,
    ],
    [
      'layer not an object',
      enc({ ...ociManifest(), layers: [null] }),
      undefined,
      /layers\[0\]: not an object/,
    ],
    [
      'layer missing digest',
      enc({ ...ociManifest(), layers: [{ mediaType: MediaType.ociLayer, size: 1 }] }),
      undefined,
      /layers\[0\]: missing digest/,
    ],
    [
      'layer md5 digest',
      enc({ ...ociManifest(), layers: [desc(MediaType.ociLayer, 1, { digest: `md5:${'a'.repeat(32)}` })] }),
      undefined,
      /unsupported digest algorithm/,
    ],
    [
      'layer urls not strings',
      enc({ ...ociManifest(), layers: [desc(MediaType.ociLayer, 1, { urls: [1] })] }),
      undefined,
      /urls must be a list of strings/,
    ],
    [
      'layer annotations not strings',
      enc({ ...ociManifest(), layers: [desc(MediaType.ociLayer, 1, { annotations: { a: 1 } })] }),
      undefined,
      /annotations must map/,
    ],
    [
      'index entry platform not an object',
      enc({ ...ociIndex(), manifests: [desc(MediaType.ociManifest, 1, { platform: 'linux/amd64' })] }),
      undefined,
      /manifests\[0\]\.platform: not an object/,
    ],
    [
      'index entry platform missing os',
      enc({
        ...ociIndex(),
        manifests: [desc(MediaType.ociManifest, 1, { platform: { architecture: 'amd64' } })],
      }),
      undefined,
      /os must be a string/,
    ],
    [
      'manifest annotations not strings',
      enc({ ...ociManifest(), annotations: { a: ['b'] } }),
      undefined,
      /annotations must map/,
    ],
    [
      'bad subject',
      enc({ ...ociManifest(), subject: { mediaType: MediaType.ociManifest } }),
      undefined,
      /subject: missing digest/,
    ],
    [
      'bad artifactType',
      enc({ ...ociManifest(), artifactType: 'not a type' }),
      undefined,
      /invalid artifactType/,
    ],
    ['oversize', new Uint8Array(MAX_MANIFEST_BYTES + 1), undefined, /more than the 4194304 allowed/],
  ];
  for (const [name, bytes, header, reason] of cases) {
    test(name, () => rejects(() => parseManifest(bytes, header), reason));
  }
});

describe('round trip', () => {
  test('unknown fields survive parse and serialize, at every level', () => {
    const doc = {
      schemaVersion: 2,
      mediaType: MediaType.ociManifest,
      'x-top': { nested: [1, 'two', null] },
      config: { ...desc(MediaType.ociConfig, 1), 'x-config': true },
      layers: [{ ...desc(MediaType.ociLayerGzip, 2), 'x-layer': 3.5 }],
      annotations: { a: 'b' },
      zzz: null,
    };
    const bytes = enc(doc);
    const p = parseManifest(bytes);
    assert.deepEqual(serializeJson(p.kind === 'manifest' ? p.manifest : p.index), bytes);
  });
  test('an index keeps unknown fields and platform extras', () => {
    const doc = {
      ...ociIndex(),
      'x-index': 1,
      manifests: [
        desc(MediaType.ociManifest, 1, {
          platform: { os: 'windows', architecture: 'amd64', 'os.version': '10.0.1', 'x-p': 1 },
        }),
      ],
    };
    const bytes = enc(doc);
    const p = parseManifest(bytes);
    assert.ok(p.kind === 'index');
    assert.deepEqual(serializeJson(p.index), bytes);
  });
  test('a "__proto__" key is kept as data, not used as a prototype', () => {
    const text = JSON.stringify(ociManifest()).replace('{', '{"__proto__":{"config":"poison"},');
    const p = parseManifest(enc(text));
    assert.ok(p.kind === 'manifest');
    assert.equal(typeof p.manifest.config, 'object');
    assert.equal(new TextDecoder().decode(serializeJson(p.manifest)), text);
  });
  test('property: compact manifests with random extra fields serialise to the same bytes', () => {
    const json = fc.jsonValue({ maxDepth: 2 });
    fc.assert(
      fc.property(
        fc.dictionary(
          fc.string().filter((k) => !(k in ociManifest())),
          json,
          { maxKeys: 4 },
        ),
        (extra) => {
          const bytes = enc({ ...ociManifest(), ...extra });
          const p = parseManifest(bytes);
          assert.ok(p.kind === 'manifest');
          assert.equal(digestOf(serializeJson(p.manifest)), digestOf(bytes));
        },
      ),
      { numRuns: 200 },
    );
  });
  test('property: arbitrary JSON never crashes the parser with anything but InvalidArgument', () => {
    fc.assert(
      fc.property(
        fc.jsonValue({ maxDepth: 3 }),
        fc.option(fc.constantFrom(...Object.values(MediaType))),
        (v, ct) => {
          try {
            parseManifest(enc(JSON.stringify(v) ?? 'null'), ct ?? undefined);
          } catch (err) {
            assert.ok(isInvalidArgument(err), String(err));
          }
        },
      ),
      { numRuns: 500 },
    );
  });
});

const config = () => ({
  created: '2024-01-01T00:00:00Z',
  architecture: 'amd64',
  os: 'linux',
  config: {
    Env: ['PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin'],
    Entrypoint: ['/bin/sh', '-c'],
    Cmd: ['echo hi'],
    WorkingDir: '/',
    User: '1000:1000',
    Labels: { maintainer: 'me' },
    ExposedPorts: { '80/tcp': {} },
    Volumes: { '/data': {} },
    StopSignal: 'SIGTERM',
    Healthcheck: { Test: ['CMD', 'true'] },
  },
  rootfs: { type: 'layers', diff_ids: [`sha256:${hex(1)}`, `sha256:${hex(2)}`] },
  history: [
    { created: '2024-01-01T00:00:00Z', created_by: 'ADD file', comment: 'c', author: 'a' },
    { created_by: 'ENV x=y', empty_layer: true },
    { created_by: 'RUN true' },
  ],
});

describe('parseImageConfig', () => {
  test('accepts a full config and keeps unknown fields byte for byte', () => {
    const doc = { ...config(), 'x-extra': { a: 1 }, variant: 'v8', 'os.version': '1', 'os.features': ['f'] };
    const bytes = enc(doc);
    const c = parseImageConfig(bytes);
    assert.equal(c.rootfs.diff_ids.length, 2);
    assert.deepEqual(c.config?.Env, doc.config.Env);
    assert.deepEqual(serializeJson(c), bytes);
  });
  test('accepts a minimal config (no config, no history, no layers)', () => {
    const c = parseImageConfig(
      enc({ architecture: 'arm64', os: 'linux', rootfs: { type: 'layers', diff_ids: [] } }),
    );
    assert.equal(c.config, undefined);
    assert.deepEqual(c.rootfs.diff_ids, []);
  });
  test("drops Docker's nulls for unset fields", () => {
    const doc = config() as Record<string, unknown> & { config: Record<string, unknown> };
    Object.assign(doc.config, {
      Env: null,
      Entrypoint: null,
      Cmd: null,
      Labels: null,
      Volumes: null,
      ExposedPorts: null,
      WorkingDir: null,
      OnBuild: null,
    });
    const c = parseImageConfig(enc(doc));
    for (const key of ['Env', 'Entrypoint', 'Cmd', 'Labels', 'Volumes', 'ExposedPorts', 'WorkingDir']) {
      assert.equal(key in (c.config ?? {}), false, key);
    }
    assert.equal(c.config?.OnBuild, null, 'fields we do not type are left alone');
    assert.equal(parseImageConfig(enc({ ...config(), config: null, history: null })).config, undefined);
  });

  const bad = (patch: (c: ReturnType<typeof config>) => unknown): Uint8Array => {
    const c = config();
    const out = patch(c);
    return enc(out === undefined ? c : out);
  };
  const cases: [string, Uint8Array, RegExp][] = [
    ['not JSON', enc('{'), /image config is not valid JSON/],
    ['an array', enc([]), /not a JSON object/],
    ['oversize', new Uint8Array(MAX_CONFIG_BYTES + 1), /more than the 8388608 allowed/],
    ['no architecture', bad((c) => ({ ...c, architecture: undefined })), /architecture must be a string/],
    ['numeric os', bad((c) => ({ ...c, os: 1 })), /os must be a string/],
    ['variant not a string', bad((c) => ({ ...c, variant: 8 })), /variant must be a string/],
    ['created not a string', bad((c) => ({ ...c, created: 0 })), /created must be a string/],
    ['os.features not strings', bad((c) => ({ ...c, 'os.features': [1] })), /os\.features/],
    ['no rootfs', bad((c) => ({ ...c, rootfs: undefined })), /rootfs missing/],
    ['rootfs not an object', bad((c) => ({ ...c, rootfs: [] })), /rootfs missing or not an object/],
    [
      'rootfs wrong type',
      bad((c) => ({ ...c, rootfs: { ...c.rootfs, type: 'layered' } })),
      /rootfs\.type must be "layers"/,
    ],
    ['rootfs no diff_ids', bad((c) => ({ ...c, rootfs: { type: 'layers' } })), /diff_ids must be a list/],
    [
      'diff_id not a string',
      bad((c) => ({ ...c, rootfs: { type: 'layers', diff_ids: [1] } })),
      /diff_ids\[0\] must be a string/,
    ],
    [
      'diff_id short',
      bad((c) => ({ ...c, rootfs: { type: 'layers', diff_ids: [`sha256:${hex(1)}`, 'sha256:abc'] } })),
      /diff_ids\[1\]: invalid sha256 digest/,
    ],
    [
      'diff_id uppercase',
      bad((c) => ({ ...c, rootfs: { type: 'layers', diff_ids: [`sha256:${'A'.repeat(64)}`] } })),
      /lowercase/,
    ],
    ['config not an object', bad((c) => ({ ...c, config: [] })), /config must be an object/],
    ['Env a string', bad((c) => ({ ...c, config: { Env: 'A=1' } })), /Env must be a list of strings/],
    ['Cmd with a number', bad((c) => ({ ...c, config: { Cmd: ['a', 1] } })), /Cmd must be a list of strings/],
    ['Entrypoint an object', bad((c) => ({ ...c, config: { Entrypoint: {} } })), /Entrypoint must be a list/],
    ['WorkingDir a number', bad((c) => ({ ...c, config: { WorkingDir: 1 } })), /WorkingDir must be a string/],
    ['User a list', bad((c) => ({ ...c, config: { User: ['root'] } })), /User must be a string/],
    ['Labels not strings', bad((c) => ({ ...c, config: { Labels: { a: 1 } } })), /Labels must map strings/],
    [
      'ExposedPorts a list',
      bad((c) => ({ ...c, config: { ExposedPorts: ['80/tcp'] } })),
      /ExposedPorts must map/,
    ],
    ['Volumes to strings', bad((c) => ({ ...c, config: { Volumes: { '/a': 'x' } } })), /Volumes must map/],
    ['history not a list', bad((c) => ({ ...c, history: {} })), /history must be a list/],
    ['history entry not an object', bad((c) => ({ ...c, history: ['x'] })), /history\[0\]: not an object/],
    [
      'history empty_layer a string',
      bad((c) => ({ ...c, history: [{ empty_layer: 'true' }] })),
      /empty_layer must be a boolean/,
    ],
    [
      'history created_by a number',
      bad((c) => ({ ...c, history: [{}, { created_by: 1 }] })),
      /history\[1\]: created_by must be a string/,
    ],
  ];
  for (const [name, bytes, reason] of cases) {
    test(`rejects ${name}`, () => rejects(() => parseImageConfig(bytes), reason));
  }
});

describe('serializeJson', () => {
  test('writes compact JSON in insertion order', () => {
    const bytes = serializeJson({ b: 1, a: [1, { d: 'x', c: null }] });
    assert.equal(new TextDecoder().decode(bytes), '{"b":1,"a":[1,{"d":"x","c":null}]}');
  });
  test('writes UTF-8', () => {
    assert.deepEqual(serializeJson({ s: 'é' }), new Uint8Array([...enc('{"s":"'), 0xc3, 0xa9, ...enc('"}')]));
  });
  test('refuses values with no JSON form', () => {
    rejects(() => serializeJson(undefined), /no JSON form/);
    rejects(() => serializeJson(() => 1), /no JSON form/);
  });
});
