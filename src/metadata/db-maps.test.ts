import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { decodeMap, encodeMap } from './db.ts';

describe('label maps in the database', () => {
  it('round-trip, awkward keys and values included', () => {
    const map = { a: 'b', 'x.y': 'z"q\\', é: '\u2028', '': '' };
    assert.deepEqual(decodeMap(encodeMap(map)), map);
    assert.deepEqual(decodeMap(encodeMap(undefined)), {});
  });

  it('keep __proto__ as an ordinary own key', () => {
    const m = decodeMap('{"__proto__":"p","a":"1"}');
    assert.deepEqual(Object.keys(m), ['__proto__', 'a']);
    assert.equal(Object.getOwnPropertyDescriptor(m, '__proto__')?.value, 'p');
    assert.equal(Object.getPrototypeOf(m), Object.prototype);
  });

  it('drop values that are not strings, and anything that is not an object', () => {
    assert.deepEqual(decodeMap('{"a":"1","n":2,"o":{},"z":null,"b":"2"}'), { a: '1', b: '2' });
    assert.deepEqual(decodeMap('{"n":1}'), {});
    assert.deepEqual(decodeMap('[]'), {});
    assert.deepEqual(decodeMap('"s"'), {});
    assert.deepEqual(decodeMap('null'), {});
  });
});
