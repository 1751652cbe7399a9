import assert from 'node:assert/strict';
import { test } from 'node:test';
import fc from 'fast-check';
import { type Challenge, findChallenge, formatChallenge, parseChallenges } from './challenge.ts';

test('parses the Bearer challenge a distribution registry sends', () => {
  const got = parseChallenges(
    'Bearer realm="https://auth.example/token",service="registry.example",scope="repository:a/b:pull,push"',
  );
  assert.deepEqual(got, [
    {
      scheme: 'bearer',
      params: {
        realm: 'https://auth.example/token',
        service: 'registry.example',
        scope: 'repository:a/b:pull,push',
      },
    },
  ]);
});

test('parses several challenges in one header and across header lines', () => {
  const got = parseChallenges([
    'Basic realm="Registry Realm", Bearer realm="https://t/x",service=s,error="insufficient_scope"',
    'Negotiate abc+/==',
  ]);
  assert.equal(got.length, 3);
  assert.deepEqual(got[0], { scheme: 'basic', params: { realm: 'Registry Realm' } });
  assert.deepEqual(got[1], {
    scheme: 'bearer',
    params: { realm: 'https://t/x', service: 's', error: 'insufficient_scope' },
  });
  assert.deepEqual(got[2], { scheme: 'negotiate', params: {}, token68: 'abc+/==' });
});

test('schemes and parameter names are case-insensitive, values keep their case', () => {
  const [c] = parseChallenges('BEARER Realm="HTTP://X/Y" , SERVICE = "Reg"');
  assert.equal(c?.scheme, 'bearer');
  assert.deepEqual(c?.params, { realm: 'HTTP://X/Y', service: 'Reg' });
  assert.ok(findChallenge(parseChallenges('BaSiC realm=x'), 'Basic'));
});

test('quoted strings: escapes, commas and equals signs inside quotes', () => {
  const [c] = parseChallenges('Bearer realm="a\\"b\\\\c,d=e", scope="x,y"');
  assert.deepEqual(c?.params, { realm: 'a"b\\c,d=e', scope: 'x,y' });
});

test('a scheme without parameters, empty list elements, and an empty header', () => {
  assert.deepEqual(parseChallenges(', ,Basic,, Bearer realm=x,'), [
    { scheme: 'basic', params: {} },
    { scheme: 'bearer', params: { realm: 'x' } },
  ]);
  assert.deepEqual(parseChallenges(''), []);
  assert.deepEqual(parseChallenges(undefined), []);
});

test('malformed parts are skipped without hiding the well-formed challenges', () => {
  const got = parseChallenges('=garbage, Bearer realm="x" junk, service=y, Basic realm="unterminated');
  assert.deepEqual(got, [
    { scheme: 'bearer', params: { realm: 'x', service: 'y' } },
    { scheme: 'basic', params: { realm: 'unterminated' } },
  ]);
  assert.deepEqual(parseChallenges('Bearer"x"'), [{ scheme: 'bearer', params: {} }]);
  // The first occurrence of a duplicated parameter wins.
  assert.deepEqual(parseChallenges('Bearer realm=a, realm=b')[0]?.params, { realm: 'a' });
});

const tokenArb = fc.stringMatching(/^[A-Za-z][A-Za-z0-9_.-]{0,10}$/);
const valueArb = fc.string({
  maxLength: 20,
  unit: fc.constantFrom('a', 'Z', '9', ',', '=', '"', '\\', ' ', ':', '/'),
});
const wsArb = fc.constantFrom('', ' ', '  ', '\t');
const randomCase = (s: string, mask: number): string =>
  [...s].map((ch, i) => ((mask >> (i % 31)) & 1 ? ch.toUpperCase() : ch.toLowerCase())).join('');

const challengeArb = fc.record({
  scheme: tokenArb,
  params: fc.uniqueArray(fc.tuple(tokenArb, valueArb), {
    maxLength: 4,
    selector: ([k]) => k.toLowerCase(),
  }),
  mask: fc.nat(),
  ws: wsArb,
  quoteAll: fc.boolean(),
});

test('property: rendered challenges parse back to what was rendered', () => {
  fc.assert(
    fc.property(fc.array(challengeArb, { minLength: 1, maxLength: 4 }), (items) => {
      const header = items
        .map(({ scheme, params, mask, ws, quoteAll }) => {
          const rendered = params.map(([k, v]) => {
            const plain = /^[A-Za-z0-9]+$/.test(v) && !quoteAll;
            const val = plain ? v : `"${v.replace(/["\\]/g, '\\$&')}"`;
            return `${randomCase(k, mask)}${ws}=${ws}${val}`;
          });
          const sc = randomCase(scheme, ~mask);
          return rendered.length ? `${sc} ${rendered.join(`${ws},${ws}`)}` : sc;
        })
        .join(', ');
      const want: Challenge[] = items.map(({ scheme, params }) => ({
        scheme: scheme.toLowerCase(),
        params: Object.fromEntries(params.map(([k, v]) => [k.toLowerCase(), v])),
      }));
      assert.deepEqual(parseChallenges(header), want);
    }),
    { numRuns: 500 },
  );
});

test('property: formatChallenge and parseChallenges round-trip', () => {
  fc.assert(
    fc.property(
      tokenArb,
      fc.uniqueArray(fc.tuple(tokenArb, fc.string({ maxLength: 15 })), {
        maxLength: 4,
        selector: ([k]) => k.toLowerCase(),
      }),
      (scheme, params) => {
        const c: Challenge = {
          scheme: scheme.toLowerCase(),
          params: Object.fromEntries(params.map(([k, v]) => [k.toLowerCase(), v])),
        };
        assert.deepEqual(parseChallenges(formatChallenge(c)), [c]);
      },
    ),
  );
});

test('property: the parser never throws and only yields lowercase schemes', () => {
  fc.assert(
    fc.property(fc.string({ maxLength: 80 }), (s) => {
      for (const c of parseChallenges(s)) {
        assert.equal(c.scheme, c.scheme.toLowerCase());
        assert.ok(c.scheme.length > 0);
      }
    }),
    { numRuns: 1000 },
  );
});
