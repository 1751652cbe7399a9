import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { isInvalidArgument } from '../errors.ts';
import { isStringMap, isValidMediaType, parseDescriptor, parsePlatformValue } from './descriptor.ts';
import { digestOf } from './digest.ts';
import { MediaType } from './media-types.ts';

const base = () => ({ mediaType: MediaType.ociLayerGzip, digest: digestOf('x'), size: 1 });

function rejects(value: unknown, reason: RegExp, where?: string): void {
  assert.throws(
    () => parseDescriptor(value, where),
    (err: unknown) => isInvalidArgument(err) && reason.test((err as Error).message),
  );
}

describe('parseDescriptor', () => {
  test('accepts a minimal descriptor and returns the same object, unknown fields kept', () => {
    const d = { ...base(), 'x-extra': [1] };
    assert.equal(parseDescriptor(d), d);
  });
  test('accepts every optional field', () => {
    const data = Buffer.from('{}').toString('base64');
    const d = {
      mediaType: MediaType.ociEmpty,
      digest: digestOf('{}'),
      size: 2,
      urls: ['https://example.invalid/blob'],
      annotations: { a: 'b' },
      platform: { os: 'linux', architecture: 'arm64', variant: 'v8', 'os.features': [], features: ['x'] },
      artifactType: 'application/vnd.example+json',
      data,
    };
    assert.equal(parseDescriptor(d), d);
    assert.equal(parseDescriptor({ ...base(), size: 0, digest: digestOf('') }).size, 0);
  });

  const cases: [string, unknown, RegExp][] = [
    ['null', null, /descriptor: not an object/],
    ['an array', [], /not an object/],
    ['a string', 'sha256:x', /not an object/],
    ['no mediaType', { ...base(), mediaType: undefined }, /invalid mediaType/],
    ['mediaType without subtype', { ...base(), mediaType: 'application' }, /invalid mediaType/],
    ['mediaType with spaces', { ...base(), mediaType: 'application/vnd x' }, /invalid mediaType/],
    ['no digest', { ...base(), digest: undefined }, /missing digest/],
    ['bad digest', { ...base(), digest: 'sha256:abc' }, /invalid sha256 digest/],
    ['size a string', { ...base(), size: '1' }, /invalid size "1"/],
    ['size negative', { ...base(), size: -1 }, /invalid size/],
    ['size not an integer', { ...base(), size: 0.5 }, /invalid size/],
    ['size beyond safe integers', { ...base(), size: 2 ** 53 }, /invalid size/],
    ['urls not a list', { ...base(), urls: 'u' }, /urls must be a list/],
    ['annotations with a number', { ...base(), annotations: { a: 1 } }, /annotations must map/],
    ['annotations a list', { ...base(), annotations: ['a'] }, /annotations must map/],
    ['platform a string', { ...base(), platform: 'linux/amd64' }, /platform: not an object/],
    [
      'platform without architecture',
      { ...base(), platform: { os: 'linux' } },
      /architecture must be a string/,
    ],
    [
      'platform variant a number',
      { ...base(), platform: { os: 'linux', architecture: 'arm', variant: 7 } },
      /variant must be a string/,
    ],
    [
      'platform os.features a string',
      { ...base(), platform: { os: 'l', architecture: 'a', 'os.features': 'f' } },
      /os\.features must be a list/,
    ],
    ['artifactType not a media type', { ...base(), artifactType: 'sbom' }, /invalid artifactType/],
    ['data not base64', { ...base(), data: 'not base64!' }, /data must be base64/],
    ['data a number', { ...base(), data: 1 }, /data must be base64/],
    [
      'data of the wrong size',
      { ...base(), data: Buffer.from('xy').toString('base64') },
      /data has 2 bytes, size says 1/,
    ],
    [
      'data not matching the digest',
      { ...base(), data: Buffer.from('y').toString('base64') },
      /data does not match digest/,
    ],
  ];
  for (const [name, value, reason] of cases) test(`rejects ${name}`, () => rejects(value, reason));

  test('names the descriptor in messages', () => rejects(null, /^layers\[3\]: not an object$/, 'layers[3]'));
});

describe('parsePlatformValue', () => {
  test('accepts and returns the object', () => {
    const p = { os: 'windows', architecture: 'amd64', 'os.version': '10.0.1', extra: 1 };
    assert.equal(parsePlatformValue(p), p);
  });
  test('rejects non-objects', () => {
    assert.throws(
      () => parsePlatformValue(undefined),
      (e: unknown) => isInvalidArgument(e),
    );
    assert.throws(
      () => parsePlatformValue({ os: 1, architecture: 'a' }),
      (e: unknown) => isInvalidArgument(e),
    );
  });
});

describe('small validators', () => {
  test('isValidMediaType', () => {
    assert.equal(isValidMediaType(MediaType.ociManifest), true);
    assert.equal(isValidMediaType('a/b'), true);
    assert.equal(isValidMediaType('a/b; charset=utf-8'), false);
    assert.equal(isValidMediaType(`a/${'b'.repeat(127)}`), true);
    assert.equal(isValidMediaType(`a/${'b'.repeat(128)}`), false);
    assert.equal(isValidMediaType('/b'), false);
  });
  test('isStringMap', () => {
    assert.equal(isStringMap({}), true);
    assert.equal(isStringMap({ a: 'b' }), true);
    assert.equal(isStringMap({ a: null }), false);
    assert.equal(isStringMap(null), false);
    assert.equal(isStringMap(['a']), false);
  });
});
