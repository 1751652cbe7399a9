import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { deflateSync, gzipSync } from 'node:zlib';
import fc from 'fast-check';
import { errorKind } from '../../errors.ts';
import {
  checkEncoding,
  encodeStatusMessage,
  framedMessage,
  MessageDecoder,
  messagePrefix,
  parseTimeout,
} from './framing.ts';

const compressedFrame = (body: Buffer): Buffer => {
  const prefix = messagePrefix(body.length);
  prefix[0] = 1;
  return Buffer.concat([prefix, body]);
};

describe('MessageDecoder', () => {
  test('any split of a run of frames yields the same messages', () => {
    fc.assert(
      fc.property(
        fc.array(fc.uint8Array({ maxLength: 300 }), { maxLength: 8 }),
        fc.array(fc.integer({ min: 1, max: 64 }), { minLength: 1, maxLength: 20 }),
        (messages, cuts) => {
          const wire = Buffer.concat(messages.map((m) => framedMessage(m)));
          const decoder = new MessageDecoder(1 << 20, undefined);
          const out: Buffer[] = [];
          let at = 0;
          let i = 0;
          while (at < wire.length) {
            const n = cuts[i++ % cuts.length]!;
            out.push(...decoder.push(wire.subarray(at, at + n)));
            at += n;
          }
          assert.equal(decoder.partial, false);
          assert.deepEqual(
            out.map((b) => Buffer.from(b)),
            messages.map((m) => Buffer.from(m)),
          );
        },
      ),
    );
  });

  test('a message cut short is reported as partial', () => {
    const decoder = new MessageDecoder(1024, undefined);
    assert.deepEqual(decoder.push(framedMessage(Buffer.from('hello')).subarray(0, 7)), []);
    assert.equal(decoder.partial, true);
  });

  test('a declared length over the limit is refused before it is buffered', () => {
    const decoder = new MessageDecoder(10, undefined);
    assert.throws(
      () => decoder.push(messagePrefix(11)),
      (err) => errorKind(err) === 'ResourceExhausted' && /larger than max \(11 vs\. 10\)/.test(String(err)),
    );
  });

  test('an unknown flag byte is refused', () => {
    const frame = framedMessage(Buffer.from('x'));
    frame[0] = 7;
    assert.throws(
      () => new MessageDecoder(10, undefined).push(frame),
      (err) => errorKind(err) === 'Internal',
    );
  });

  test('gzip and deflate messages are inflated; a compressed message without an encoding is refused', () => {
    const body = Buffer.from('compressed request body');
    assert.deepEqual(new MessageDecoder(1024, 'gzip').push(compressedFrame(gzipSync(body))), [body]);
    assert.deepEqual(new MessageDecoder(1024, 'deflate').push(compressedFrame(deflateSync(body))), [body]);
    assert.throws(
      () => new MessageDecoder(1024, undefined).push(compressedFrame(gzipSync(body))),
      (err) => errorKind(err) === 'Internal',
    );
    assert.throws(
      () => new MessageDecoder(1024, 'gzip').push(compressedFrame(Buffer.from('not gzip'))),
      (err) => errorKind(err) === 'Internal' && /cannot decompress/.test(String(err)),
    );
  });

  test('a small compressed message that inflates past the limit is refused', () => {
    const bomb = gzipSync(Buffer.alloc(1 << 20));
    assert.ok(bomb.length < 4096);
    assert.throws(
      () => new MessageDecoder(4096, 'gzip').push(compressedFrame(bomb)),
      (err) => errorKind(err) === 'ResourceExhausted',
    );
  });
});

test('checkEncoding accepts identity, gzip and deflate only', () => {
  for (const ok of [undefined, 'identity', 'gzip', 'deflate']) checkEncoding(ok);
  assert.throws(
    () => checkEncoding('snappy'),
    (err) => errorKind(err) === 'Unimplemented',
  );
});

test('parseTimeout reads every unit and refuses malformed values', () => {
  assert.equal(parseTimeout(undefined), undefined);
  assert.equal(parseTimeout('2H'), 7_200_000);
  assert.equal(parseTimeout('3M'), 180_000);
  assert.equal(parseTimeout('5S'), 5000);
  assert.equal(parseTimeout('250m'), 250);
  assert.equal(parseTimeout('1500u'), 1.5);
  assert.equal(parseTimeout('2000000n'), 2);
  for (const bad of ['', '5', 'S', '123456789S', '1.5S', '-1S', '5s']) {
    assert.throws(
      () => parseTimeout(bad),
      (err) => errorKind(err) === 'Internal',
      bad,
    );
  }
});

test('status messages are percent-encoded outside printable ASCII, and decode back', () => {
  assert.equal(encodeStatusMessage('image "x": not found'), 'image "x": not found');
  assert.equal(encodeStatusMessage('100%'), '100%25');
  assert.equal(encodeStatusMessage('a\nb'), 'a%0Ab');
  assert.equal(encodeStatusMessage('é'), '%C3%A9');
  fc.assert(
    fc.property(fc.string({ unit: 'binary' }), (s) => {
      const encoded = encodeStatusMessage(s);
      assert.match(encoded, /^[\x20-\x7e]*$/);
      assert.equal(decodeURIComponent(encoded), s);
    }),
  );
});
