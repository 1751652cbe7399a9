import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import fc from 'fast-check';
import { applyEnvModifiers, type EnvModifier, envModifiersOf } from './env.ts';

/** Base env + the envs of added images, in order → the workspace env. */
function merge(base: string[] | undefined, ...added: string[][]): readonly string[] | null | undefined {
  return applyEnvModifiers(
    base,
    added.flatMap((e) => envModifiersOf(e)),
  );
}

describe('envModifiersOf', () => {
  test('reads the three prefixes and ignores everything else', () => {
    assert.deepEqual(
      envModifiersOf([
        'PATH=/usr/bin',
        'GITPOD_ENV_APPEND_PATH=/ide/bin:',
        'GITPOD_ENV_SET_EDITOR=code',
        'GITPOD_ENV_PREPEND_LD_LIBRARY_PATH=:/ide/lib',
        'GITPOD_BUILT_IN_PLUGINS=x',
        'GITPOD_ENV_=x',
      ]),
      [
        { op: 'append', name: 'PATH', value: '/ide/bin:' },
        { op: 'set', name: 'EDITOR', value: 'code' },
        { op: 'prepend', name: 'LD_LIBRARY_PATH', value: ':/ide/lib' },
      ],
    );
  });

  test('empty names are skipped for every prefix; empty values only for APPEND/PREPEND', () => {
    assert.deepEqual(
      envModifiersOf([
        'GITPOD_ENV_SET_=v',
        'GITPOD_ENV_APPEND_=v',
        'GITPOD_ENV_PREPEND_=v',
        'GITPOD_ENV_APPEND_A=',
        'GITPOD_ENV_PREPEND_B=',
        'GITPOD_ENV_APPEND_C',
        'GITPOD_ENV_SET_D=',
        'GITPOD_ENV_SET_E',
      ]),
      [
        { op: 'set', name: 'D', value: '' },
        { op: 'set', name: 'E', value: '' },
      ],
    );
  });

  test('a value may contain "="; the key ends at the first one', () => {
    assert.deepEqual(envModifiersOf(['GITPOD_ENV_SET_OPTS=a=b=c']), [
      { op: 'set', name: 'OPTS', value: 'a=b=c' },
    ]);
  });

  test('a repeated key in the added image yields one modifier with its last value, at its first position', () => {
    assert.deepEqual(
      envModifiersOf(['GITPOD_ENV_APPEND_PATH=/a:', 'GITPOD_ENV_SET_X=1', 'GITPOD_ENV_APPEND_PATH=/b:']),
      [
        { op: 'append', name: 'PATH', value: '/b:' },
        { op: 'set', name: 'X', value: '1' },
      ],
    );
  });

  test('absent env', () => {
    assert.deepEqual(envModifiersOf(undefined), []);
    assert.deepEqual(envModifiersOf(null), []);
  });
});

describe('applyEnvModifiers: the table', () => {
  const base = ['HOME=/root', 'PATH=/usr/local/bin:/usr/bin', 'LANG=C.UTF-8'];
  const cases: { name: string; base: string[] | undefined; added: string[][]; want: string[] | undefined }[] =
    [
      { name: 'no modifiers: base untouched', base, added: [['FOO=bar', 'PATH=/x']], want: base },
      { name: 'no modifiers, no base env: stays absent', base: undefined, added: [[]], want: undefined },
      {
        name: 'SET overrides in place',
        base,
        added: [['GITPOD_ENV_SET_LANG=en_US.UTF-8']],
        want: ['HOME=/root', 'PATH=/usr/local/bin:/usr/bin', 'LANG=en_US.UTF-8'],
      },
      {
        name: 'SET of a new var goes at the end',
        base,
        added: [['GITPOD_ENV_SET_EDITOR=code']],
        want: [...base, 'EDITOR=code'],
      },
      {
        name: 'SET to empty is kept',
        base,
        added: [['GITPOD_ENV_SET_LANG=']],
        want: ['HOME=/root', 'PATH=/usr/local/bin:/usr/bin', 'LANG='],
      },
      {
        name: 'APPEND puts the value in front of PATH, no separator added',
        base,
        added: [['GITPOD_ENV_APPEND_PATH=/ide/bin:']],
        want: ['HOME=/root', 'PATH=/ide/bin:/usr/local/bin:/usr/bin', 'LANG=C.UTF-8'],
      },
      {
        name: 'PREPEND puts the value after PATH, no separator added',
        base,
        added: [['GITPOD_ENV_PREPEND_PATH=:/opt/bin']],
        want: ['HOME=/root', 'PATH=/usr/local/bin:/usr/bin:/opt/bin', 'LANG=C.UTF-8'],
      },
      {
        name: 'APPEND of a var absent in the base sets it',
        base,
        added: [['GITPOD_ENV_APPEND_CLASSPATH=/ide/lib:']],
        want: [...base, 'CLASSPATH=/ide/lib:'],
      },
      {
        name: 'PREPEND of a var absent in the base sets it',
        base,
        added: [['GITPOD_ENV_PREPEND_CLASSPATH=:/ide/lib']],
        want: [...base, 'CLASSPATH=:/ide/lib'],
      },
      {
        name: 'APPEND with no base env at all',
        base: undefined,
        added: [['GITPOD_ENV_APPEND_PATH=/ide/bin:']],
        want: ['PATH=/ide/bin:'],
      },
      {
        name: "Gitpod's code_envs golden: empty base, unprefixed PATH of the IDE image ignored",
        base: [],
        added: [
          [
            'PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin',
            'GITPOD_ENV_APPEND_PATH=/ide/bin:',
            'GITPOD_ENV_SET_EDITOR=code',
            'GITPOD_ENV_SET_VISUAL=code',
            'GITPOD_ENV_SET_GIT_EDITOR=code --wait',
          ],
        ],
        want: ['PATH=/ide/bin:', 'EDITOR=code', 'VISUAL=code', 'GIT_EDITOR=code --wait'],
      },
      {
        name: 'images apply in order: IDE then supervisor then an ide layer',
        base,
        added: [
          ['GITPOD_ENV_APPEND_PATH=/ide/bin:', 'GITPOD_ENV_SET_EDITOR=code'],
          ['GITPOD_ENV_APPEND_PATH=/.supervisor:', 'GITPOD_ENV_SET_EDITOR=vim'],
          ['GITPOD_ENV_PREPEND_PATH=:/ext/bin'],
        ],
        want: [
          'HOME=/root',
          'PATH=/.supervisor:/ide/bin:/usr/local/bin:/usr/bin:/ext/bin',
          'LANG=C.UTF-8',
          'EDITOR=vim',
        ],
      },
      {
        name: 'SET after APPEND replaces the whole value',
        base,
        added: [['GITPOD_ENV_APPEND_PATH=/ide/bin:'], ['GITPOD_ENV_SET_PATH=/only']],
        want: ['HOME=/root', 'PATH=/only', 'LANG=C.UTF-8'],
      },
      {
        name: 'APPEND after SET builds on the set value',
        base,
        added: [['GITPOD_ENV_SET_PATH=/only'], ['GITPOD_ENV_APPEND_PATH=/ide/bin:']],
        want: ['HOME=/root', 'PATH=/ide/bin:/only', 'LANG=C.UTF-8'],
      },
      {
        name: 'a repeated key in the base keeps its first position and last value',
        base: ['A=1', 'PATH=/bin', 'A=2'],
        added: [['GITPOD_ENV_SET_B=3']],
        want: ['A=2', 'PATH=/bin', 'B=3'],
      },
      {
        name: 'a bare base entry stays bare when untouched, gets a value when modified',
        base: ['BARE', 'OTHER', 'PATH=/bin'],
        added: [['GITPOD_ENV_APPEND_OTHER=x']],
        want: ['BARE', 'OTHER=x', 'PATH=/bin'],
      },
      {
        name: 'values with "=" survive',
        base: ['OPTS=a=b'],
        added: [['GITPOD_ENV_PREPEND_OPTS= c=d']],
        want: ['OPTS=a=b c=d'],
      },
    ];
  for (const c of cases) {
    test(c.name, () => {
      assert.deepEqual(merge(c.base, ...c.added), c.want);
    });
  }

  test('the base list is not mutated', () => {
    const b = ['PATH=/bin'];
    merge(b, ['GITPOD_ENV_APPEND_PATH=/x:']);
    assert.deepEqual(b, ['PATH=/bin']);
  });
});

describe('applyEnvModifiers: properties', () => {
  const name = fc.stringMatching(/^[A-Z_][A-Z0-9_]{0,8}$/);
  const value = fc.string({ maxLength: 12 });
  const baseEnv = fc.uniqueArray(fc.tuple(name, value), { selector: ([k]) => k, maxLength: 8 });
  const modifier: fc.Arbitrary<EnvModifier> = fc.record({
    op: fc.constantFrom('set', 'append', 'prepend'),
    name,
    value,
  });
  const toMap = (env: readonly string[]): Map<string, string> =>
    new Map(env.map((e) => [e.slice(0, e.indexOf('=')), e.slice(e.indexOf('=') + 1)]));

  test('a SET var reads back as set when nothing later touches it', () => {
    fc.assert(
      fc.property(baseEnv, fc.array(modifier, { maxLength: 6 }), name, value, (b, mods, n, v) => {
        const env = applyEnvModifiers(
          b.map(([k, x]) => `${k}=${x}`),
          [...mods, { op: 'set', name: n, value: v }],
        );
        assert.equal(toMap(env ?? []).get(n), v);
      }),
    );
  });

  test('never drops or changes unrelated vars, and keeps their order', () => {
    fc.assert(
      fc.property(baseEnv, fc.array(modifier, { maxLength: 6 }), (b, mods) => {
        const base = b.map(([k, x]) => `${k}=${x}`);
        const env = applyEnvModifiers(base, mods) ?? [];
        const touched = new Set(mods.map((m) => m.name));
        const untouchedBase = base.filter((e) => !touched.has(e.slice(0, e.indexOf('='))));
        const untouchedOut = env.filter((e) => !touched.has(e.slice(0, e.indexOf('='))));
        assert.deepEqual(untouchedOut, untouchedBase);
        // Every touched var is present exactly once.
        for (const n of touched) assert.equal(env.filter((e) => e.startsWith(`${n}=`)).length, 1);
      }),
    );
  });

  test('APPEND is v + old and PREPEND is old + v for a var present in the base', () => {
    fc.assert(
      fc.property(
        baseEnv.filter((b) => b.length > 0),
        value,
        fc.boolean(),
        (b, v, front) => {
          const [k, old] = b[0]!;
          const env = applyEnvModifiers(
            b.map(([kk, x]) => `${kk}=${x}`),
            [{ op: front ? 'append' : 'prepend', name: k, value: v }],
          );
          assert.equal(toMap(env ?? []).get(k), front ? v + old : old + v);
        },
      ),
    );
  });
});
