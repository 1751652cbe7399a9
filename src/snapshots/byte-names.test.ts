import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { test } from 'node:test';
import { decodeName, encodeName, fsPath, hasEscapes, nameBytes } from './byte-names.ts';

test('valid UTF-8 decodes to the ordinary string, and goes to the file system as it is', () => {
  for (const name of ['plain', 'café/naïve', '日本語', 'emoji-😀', '\u{10080}x']) {
    const bytes = Buffer.from(name);
    assert.equal(decodeName(bytes), name);
    assert.equal(hasEscapes(name), false, name);
    assert.equal(fsPath(name), name);
    assert.equal(nameBytes(name), bytes.length);
  }
});

test('bytes that are not UTF-8 round-trip exactly, beside valid sequences', () => {
  const cases = [
    Buffer.from('caf\xe9', 'latin1'),
    Buffer.from([0xff, 0xfe, 0x2d, 0x70]),
    Buffer.concat([Buffer.from('é'), Buffer.from([0xc3]), Buffer.from('x')]),
    // An encoded surrogate and an overlong slash are invalid UTF-8: escaped byte by byte.
    Buffer.from([0xed, 0xb3, 0x80]),
    Buffer.from([0xc0, 0xaf]),
  ];
  for (let i = 0; i < 200; i++) cases.push(randomBytes(1 + (i % 40)));
  for (const bytes of cases) {
    const name = decodeName(bytes);
    assert.ok(encodeName(name).equals(bytes), bytes.toString('hex'));
    assert.equal(nameBytes(name), bytes.length);
    const p = fsPath(name);
    assert.ok(Buffer.isBuffer(p) ? p.equals(bytes) : p === bytes.toString('utf8'));
  }
});
