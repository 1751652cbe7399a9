import assert from 'node:assert/strict';
import { test } from 'node:test';
import { BinaryWriter } from '@bufbuild/protobuf/wire';
import fc from 'fast-check';
import { varintLength, writeInt64Varint, writeVarint } from './varint.ts';

test('varints are byte for byte what protobuf-es writes, up to 2^53', () => {
  const edges = [0, 1, 0x7f, 0x80, 0x3fff, 0x4000, 2 ** 32 - 1, 2 ** 32, Number.MAX_SAFE_INTEGER];
  fc.assert(
    fc.property(fc.oneof(fc.constantFrom(...edges), fc.maxSafeNat()), (n) => {
      const expected = new BinaryWriter().uint64(n).finish();
      const buf = new Uint8Array(12).fill(0xee);
      const end = writeVarint(buf, 1, n);
      assert.equal(end - 1, expected.length);
      assert.equal(varintLength(n), expected.length);
      assert.deepEqual(buf.subarray(1, end), expected);
      assert.equal(buf[end], 0xee, 'nothing written past the varint');
    }),
  );
});

test('int64 varints, negative ones included, are what protobuf-es writes', () => {
  fc.assert(
    fc.property(fc.bigInt({ min: -(1n << 63n), max: (1n << 63n) - 1n }), (v) => {
      const expected = new BinaryWriter().int64(v).finish();
      const buf = new Uint8Array(10);
      assert.deepEqual(buf.subarray(0, writeInt64Varint(buf, 0, v)), expected);
    }),
  );
});
