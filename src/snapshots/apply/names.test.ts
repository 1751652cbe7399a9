import assert from 'node:assert/strict';
import { posix } from 'node:path';
import { describe, test } from 'node:test';
import fc from 'fast-check';
import { isInvalidArgument } from '../../errors.ts';
import { cleanName, whiteoutOf } from './names.ts';

describe('cleanName', () => {
  test('drops leading slashes and dots, collapses the rest', () => {
    assert.deepEqual(cleanName('./etc/passwd'), ['etc', 'passwd']);
    assert.deepEqual(cleanName('/etc//passwd'), ['etc', 'passwd']);
    assert.deepEqual(cleanName('usr/lib/'), ['usr', 'lib']);
    assert.deepEqual(cleanName('a/./b/../c'), ['a', 'c']);
    assert.deepEqual(cleanName('./'), []);
    assert.deepEqual(cleanName('/'), []);
    assert.deepEqual(cleanName('.'), []);
    assert.deepEqual(cleanName('/..a/b..'), ['..a', 'b..']);
  });

  test('refuses names that climb above the root, NUL bytes and over-long names', () => {
    for (const bad of [
      '..',
      '../x',
      'a/../../x',
      '/../x',
      './..',
      'a/b/../../..',
      'a\0b',
      'x'.repeat(256),
      `${'a/'.repeat(2049)}b`,
    ]) {
      assert.throws(() => cleanName(bad), isInvalidArgument, JSON.stringify(bad.slice(0, 40)));
    }
    assert.deepEqual(cleanName('x'.repeat(255)), ['x'.repeat(255)]);
  });

  test('a cleaned name, joined to a root, never leaves it', () => {
    const segment = fc.constantFrom('a', 'b', '.', '..', '', '.wh.a', '...');
    fc.assert(
      fc.property(fc.array(segment, { maxLength: 12 }), fc.boolean(), (segs, absolute) => {
        const name = (absolute ? '/' : '') + segs.join('/');
        let parts: string[];
        try {
          parts = cleanName(name);
        } catch (err) {
          assert.ok(isInvalidArgument(err));
          return;
        }
        for (const p of parts) assert.ok(p !== '' && p !== '.' && p !== '..');
        const joined = posix.join('/root', ...parts);
        assert.ok(joined === '/root' || joined.startsWith('/root/'));
      }),
    );
  });
});

describe('whiteoutOf', () => {
  test('tells whiteouts, opaque markers and AUFS metadata apart', () => {
    assert.deepEqual(whiteoutOf('passwd'), { kind: 'none' });
    assert.deepEqual(whiteoutOf('.whatever'), { kind: 'none' });
    assert.deepEqual(whiteoutOf('.wh.passwd'), { kind: 'whiteout', target: 'passwd' });
    assert.deepEqual(whiteoutOf('.wh..hidden'), { kind: 'whiteout', target: '.hidden' });
    assert.deepEqual(whiteoutOf('.wh..wh..opq'), { kind: 'opaque' });
    assert.deepEqual(whiteoutOf('.wh..wh.plnk'), { kind: 'meta' });
    assert.deepEqual(whiteoutOf('.wh..wh.aufs'), { kind: 'meta' });
  });

  test('refuses whiteouts that name no file', () => {
    for (const bad of ['.wh.', '.wh..', '.wh...'])
      assert.throws(() => whiteoutOf(bad), isInvalidArgument, bad);
  });
});
