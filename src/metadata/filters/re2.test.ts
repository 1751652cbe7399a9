import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import fc from 'fast-check';
import { compileRe2, MAX_PATTERN_LENGTH, Re2SyntaxError } from './re2.ts';

const m = (pattern: string, text: string): boolean => compileRe2(pattern).test(text);

describe('re2: matching (unanchored search, Go semantics)', () => {
  const cases: Array<[string, string, boolean]> = [
    ['abc', 'xxabcxx', true],
    ['abc', 'ab', false],
    ['^abc$', 'abc', true],
    ['^abc$', 'abc\n', false], // Go's $ is end of text without (?m)
    ['(?m)^b$', 'a\nb\nc', true],
    ['a.c', 'a\nc', false],
    ['(?s)a.c', 'a\nc', true],
    ['\\Aab\\z', 'ab', true],
    ['\\Aab\\z', 'xab', false],
    ['(?i)HeLLo', 'say hello', true],
    ['(?i:a)b', 'Ab', true],
    ['(?i:a)b', 'AB', false],
    ['x(?i)y', 'xY', true],
    ['x(?i)y', 'XY', false],
    ['[[:digit:]]+', 'abc123', true],
    ['[[:^alpha:]]', 'abc', false],
    ['\\d{3}', 'a12b', false],
    ['\\d{3}', 'a123b', true],
    ['^a{2,3}$', 'aaaa', false],
    ['^a{2,}$', 'aaaa', true],
    ['^a{,2}$', 'a{,2}', true], // not a repeat: literal text
    ['\\bfoo\\b', 'a foo b', true],
    ['\\bfoo\\b', 'afoob', false],
    ['\\Bfoo', 'afoo', true],
    ['\\Qa.b\\E', 'a.b', true],
    ['\\Qa.b\\E', 'axb', false],
    ['\\x41\\x{42}\\101', 'ABA', true],
    ['\\pL+', '牛', true],
    ['\\p{Greek}', 'λ', true],
    ['\\P{Greek}', 'λ', false],
    ['\\p{^Greek}', 'a', true],
    ['[^a]', '\n', true],
    ['(?P<name>ab)|cd', 'xcd', true],
    ['(?<name>ab)', 'ab', true],
    ['a|b|', 'zzz', true], // empty alternative matches the empty string
    ['^$', '', true],
    ['[]a]', ']', true],
    ['[a-]', '-', true],
    ['a*?b', 'aab', true],
    ['^application/vnd\\..*', 'application/vnd.oci.image.index.v1+json', true],
    ['[\\d\\s]', 'x y', true],
    ['\\.', 'a', false],
    ['(a+)+$', `${'a'.repeat(20000)}b`, false], // exponential for a backtracking engine; linear here
    ['(a|aa)*c', 'a'.repeat(5000), false],
    // Unicode simple case folding, as Go's (?i) does it: K, k and the Kelvin sign; S, s and the long s.
    ['(?i)K', '\u212a', true],
    ['(?i)\u212a', 'k', true],
    ['(?i)s', '\u017f', true],
    ['K', '\u212a', false],
    ['^.$', '\u{1F600}', true], // one code point, not two UTF-16 units
    ['^\\x{1F600}$', '\u{1F600}', true],
  ];
  for (const [pattern, text, want] of cases) {
    it(`${JSON.stringify(pattern)} on ${JSON.stringify(text.length > 20 ? `${text.slice(0, 20)}…` : text)}`, () => {
      assert.equal(m(pattern, text), want);
    });
  }
});

describe('re2: rejected syntax', () => {
  const bad = [
    '(',
    ')',
    'a)',
    '[a',
    '[z-a]',
    '*a',
    'a**',
    'a+*',
    'a???',
    '(?=a)',
    '(?!a)',
    '(?<=a)b',
    '(?<!a)b',
    '\\1',
    '(a)\\1',
    '\\Z',
    '\\C',
    '\\e',
    'a{1001}',
    'a{3,2}',
    '(?P=name)',
    '(?P<>a)',
    '(?-)',
    '(?i-:a)',
    '(?x)a',
    '[[:nope:]]',
    '\\p{NoSuchScript}',
    '\\x{110000}',
    '\\xg1',
    'a\\',
    '(?i',
    '{2}',
    'x{2}{3}',
    '(?i)*',
  ];
  for (const pattern of bad) {
    it(JSON.stringify(pattern), () => {
      assert.throws(() => compileRe2(pattern), Re2SyntaxError);
    });
  }

  it('bounds the pattern length and program size', () => {
    assert.throws(() => compileRe2('a'.repeat(MAX_PATTERN_LENGTH + 1)), Re2SyntaxError);
    assert.throws(() => compileRe2('(a{1000}){1000}'), Re2SyntaxError);
    assert.doesNotThrow(() => compileRe2('a{1000}'));
  });
});

describe('re2: agrees with JS RegExp on the common subset', () => {
  // Patterns built from constructs both dialects read the same way (no m/s flags, ASCII only).
  const atom = fc.constantFrom('a', 'b', '.', '[ab]', '[^a]', '\\d', '\\w', '\\s', 'x', '\\.', '[a-c]');
  const pattern: fc.Arbitrary<string> = fc.letrec<{ re: string }>((tie) => ({
    re: fc.oneof(
      { depthSize: 'small', withCrossShrink: true },
      atom,
      fc.tuple(tie('re'), tie('re')).map(([x, y]) => x + y),
      fc.tuple(tie('re'), tie('re')).map(([x, y]) => `(?:${x}|${y})`),
      fc
        .tuple(tie('re'), fc.constantFrom('*', '+', '?', '{2}', '{1,2}', '{0,}', '*?'))
        .map(([x, q]) => `(?:${x})${q}`),
      fc.tuple(fc.constantFrom('^', ''), tie('re'), fc.constantFrom('$', '')).map(([a, x, b]) => a + x + b),
    ),
  })).re;
  const text = fc.string({
    unit: fc.constantFrom('a', 'b', 'c', 'x', '1', ' ', '.', '\n', '_'),
    maxLength: 12,
  });

  it('matches the same strings', () => {
    fc.assert(
      fc.property(pattern, text, (p, t) => {
        assert.equal(m(p, t), new RegExp(p, 'u').test(t), `${p} on ${JSON.stringify(t)}`);
      }),
      { numRuns: 3000 },
    );
  });

  it('never throws anything but a syntax error on random patterns', () => {
    fc.assert(
      fc.property(fc.string({ unit: 'binary', maxLength: 24 }), (p) => {
        try {
          compileRe2(p).test('abc\nxyz 123 λ');
        } catch (err) {
          assert.ok(err instanceof Re2SyntaxError, String(err));
        }
      }),
      { numRuns: 3000 },
    );
  });
});
