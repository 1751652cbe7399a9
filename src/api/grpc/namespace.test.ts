import assert from 'node:assert/strict';
import { test } from 'node:test';
import { Metadata } from '@grpc/grpc-js';
import { errorKind } from '../../errors.ts';
import { NAMESPACE_HEADER, namespaceOf, validateIdentifier } from './namespace.ts';

// containerd's own vectors (identifiers/validate_test.go), plus edge cases of ours.
const valid = [
  'default',
  'Default',
  't',
  'test',
  'swarmkit.docker.io',
  '0912341234',
  'task.0.0123456789',
  'container.system-75-f19a.00',
  'underscores_are_allowed',
  'a'.repeat(76),
];
const invalid = [
  '.foo..foo',
  'foo/foo',
  'foo/..',
  'foo..foo',
  'foo.-boo',
  'foo-.boo',
  '-foo.boo',
  'foo.boo-',
  'but__only_tasteful_underscores',
  'zn--e9.org',
  'default--default',
  'with space',
  'naïve',
  'tab\tin',
  'new\nline',
];

test('accepts containerd-valid identifiers', () => {
  for (const s of valid) assert.doesNotThrow(() => validateIdentifier(s), s);
});

test('rejects invalid identifiers with containerd’s message', () => {
  for (const s of invalid) {
    assert.throws(
      () => validateIdentifier(s),
      (err: Error) =>
        errorKind(err) === 'InvalidArgument' &&
        err.message ===
          `identifier ${JSON.stringify(s)} must match ^[A-Za-z0-9]+(?:[._-](?:[A-Za-z0-9]+))*$: invalid argument`,
      s,
    );
  }
});

test('length is checked in bytes, before the pattern', () => {
  assert.throws(() => validateIdentifier('a'.repeat(77)), {
    kind: 'InvalidArgument',
    message: `identifier "${'a'.repeat(77)}" greater than maximum length (76 characters): invalid argument`,
  });
  // 40 two-byte characters: 80 bytes, so the length message wins over the pattern one.
  assert.throws(() => validateIdentifier('é'.repeat(40)), /greater than maximum length/);
  assert.throws(() => validateIdentifier(''), {
    kind: 'InvalidArgument',
    message: 'identifier must not be empty: invalid argument',
  });
});

function md(...values: (string | Buffer)[]): Metadata {
  const m = new Metadata();
  for (const v of values) m.add(NAMESPACE_HEADER, v);
  return m;
}

test('namespaceOf takes the first header value', () => {
  assert.equal(namespaceOf(md('default')), 'default');
  assert.equal(namespaceOf(md('first', 'second')), 'first');
});

test('namespaceOf: missing or empty is FailedPrecondition', () => {
  for (const m of [new Metadata(), md('')]) {
    assert.throws(() => namespaceOf(m), {
      kind: 'FailedPrecondition',
      message: 'namespace is required: failed precondition',
    });
  }
});

test('namespaceOf: invalid is InvalidArgument prefixed with "namespace validation"', () => {
  assert.throws(() => namespaceOf(md('foo..bar')), {
    kind: 'InvalidArgument',
    message:
      'namespace validation: identifier "foo..bar" must match ^[A-Za-z0-9]+(?:[._-](?:[A-Za-z0-9]+))*$: invalid argument',
  });
  assert.throws(() => namespaceOf(md('x'.repeat(100))), {
    kind: 'InvalidArgument',
    message: `namespace validation: identifier "${'x'.repeat(100)}" greater than maximum length (76 characters): invalid argument`,
  });
});
