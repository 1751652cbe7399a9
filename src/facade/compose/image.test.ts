import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { isInvalidArgument } from '../../errors.ts';
import { imageAddition, SKIP_N_LABEL, skipNOf } from './image.ts';
import { fixtureImage, layerDiffId, layerDigest } from './test-fixtures.ts';

const names = ['l1', 'l2', 'l3'];
const withLabel = (v: string) => fixtureImage({ layers: names, labels: { [SKIP_N_LABEL]: v, other: 'x' } });

describe('skip-n label', () => {
  const kept: [string, string[]][] = [
    ['0', names],
    ['1', ['l2', 'l3']],
    ['2', ['l3']],
    ['3', []],
    ['10', []],
    ['007', []], // leading zeros are decimal: 7 ≥ 3 layers
    ['65535', []],
  ];
  for (const [v, want] of kept) {
    test(`label ${JSON.stringify(v)} keeps ${JSON.stringify(want)} with index-aligned diff_ids`, () => {
      const a = imageAddition(withLabel(v), 'ide r/ide:1', 'r/ide:1');
      assert.deepEqual(
        a.layers.map((l) => l.descriptor.digest),
        want.map(layerDigest),
      );
      assert.deepEqual(
        a.layers.map((l) => l.diffId),
        want.map(layerDiffId),
      );
    });
  }

  test('no label: every layer', () => {
    assert.equal(skipNOf(fixtureImage({ layers: names }).config, 'x'), 0);
    assert.equal(imageAddition(fixtureImage({ layers: names }), 's', 'r').layers.length, 3);
  });

  const bad: [string, string][] = [
    ['-10', 'strconv.ParseUint: parsing "-10": invalid syntax'],
    ['notanumber', 'strconv.ParseUint: parsing "notanumber": invalid syntax'],
    ['', 'strconv.ParseUint: parsing "": invalid syntax'],
    [' 1', 'strconv.ParseUint: parsing " 1": invalid syntax'],
    ['+1', 'strconv.ParseUint: parsing "+1": invalid syntax'],
    ['1.5', 'strconv.ParseUint: parsing "1.5": invalid syntax'],
    ['1_0', 'strconv.ParseUint: parsing "1_0": invalid syntax'],
    ['65536', 'strconv.ParseUint: parsing "65536": value out of range'],
  ];
  for (const [v, msg] of bad) {
    test(`label ${JSON.stringify(v)} is an InvalidArgument naming the image`, () => {
      assert.throws(
        () => imageAddition(withLabel(v), 'ide r/ide:1', 'r/ide:1'),
        (err: unknown) =>
          isInvalidArgument(err) && (err as Error).message === `image r/ide:1: skipN layer label: ${msg}`,
      );
    });
  }
});

describe('imageAddition', () => {
  test('carries the source label, the image env and an image origin per layer', () => {
    const a = imageAddition(
      fixtureImage({ layers: ['a'], env: ['GITPOD_ENV_SET_X=1'] }),
      'supervisor r/sup:2',
      'r/sup:2',
    );
    assert.equal(a.source, 'supervisor r/sup:2');
    assert.deepEqual(a.env, ['GITPOD_ENV_SET_X=1']);
    assert.deepEqual(a.layers[0]!.origin, { kind: 'image', ref: 'r/sup:2' });
  });

  test('an image without env has env null', () => {
    assert.equal(imageAddition(fixtureImage({ layers: ['a'] }), 's', 'r').env, null);
  });
});
