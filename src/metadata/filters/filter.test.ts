import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import fc from 'fast-check';
import { isInvalidArgument } from '../../errors.ts';
import { contentAdaptor, imageAdaptor, ingestAdaptor, leaseAdaptor } from './adaptors.ts';
import { type Adaptor, FilterParseError, parseFilter, parseFilters, parseSelectors } from './filter.ts';
import { quote, unquote } from './quote.ts';
import { Scanner, type TokenKind } from './scanner.ts';

interface Entry {
  name: string;
  other?: string;
  labels?: Record<string, string>;
}

// The corpus of containerd's filter tests: names, an `other` field, labels with spaces, backslashes, quotes.
const corpus: Entry[] = [
  { name: 'foo', labels: { foo: 'true' } },
  { name: 'bar' },
  { name: 'foo', labels: { foo: 'present', 'more complex label': 'present' } },
  { name: 'bar', labels: { bar: 'true' } },
  { name: 'fooer', labels: { 'more complex label with \\ and "': 'present' } },
  { name: 'fooer', labels: { 'more complex label with \\ and ".post': 'present' } },
  { name: 'baz', other: 'too complex, yo' },
  { name: 'bazo', other: 'abc' },
  { name: 'compound', labels: { foo: 'omg_asdf.asdf-qwer' } },
];

const adapt = (e: Entry): Adaptor => ({
  field(path) {
    switch (path[0]) {
      case 'name':
        return e.name.length > 0 ? e.name : undefined;
      case 'other':
        return e.other !== undefined && e.other.length > 0 ? e.other : undefined;
      case 'labels': {
        const key = path.slice(1).join('.');
        return e.labels && Object.hasOwn(e.labels, key) ? e.labels[key] : undefined;
      }
      default:
        return undefined;
    }
  },
});

const matching: Array<[string, string, number[]]> = [
  ['Empty', '', [0, 1, 2, 3, 4, 5, 6, 7, 8]],
  ['Present', 'name', [0, 1, 2, 3, 4, 5, 6, 7, 8]],
  ['LabelPresent', 'labels.foo', [0, 2, 8]],
  ['NameAndLabelPresent', 'labels.foo,name', [0, 2, 8]],
  ['LabelValue', 'labels.foo==true', [0]],
  ['LabelValuePunctuated', 'labels.foo==omg_asdf.asdf-qwer', [8]],
  ['Name', 'name==bar', [1, 3]],
  ['NameNotEqual', 'name!=bar', [0, 2, 4, 5, 6, 7, 8]],
  ['NameAndLabelPresent2', 'name==bar,labels.bar', [3]],
  ['QuotedValue', 'other=="too complex, yo"', [6]],
  ['RegexpValue', 'other~=[abc]+,name!=foo', [6, 7]],
  ['RegexpQuotedValue', 'other~=/[abc]+/,name!=foo', [6, 7]],
  ['RegexpQuotedValueRepeat', 'other~=/[abc]{1,2}/,name!=foo', [6, 7]],
  ['RegexpQuotedValueGarbage', 'other~=/[abc]{0,1}"\\//,name!=foo', []],
  ['NameAndLabelValue', 'name==bar,labels.bar==true', [3]],
  ['NameAndLabelValueNoMatch', 'name==bar,labels.bar==wrong', []],
  ['LabelQuotedFieldPathPresent', 'name==foo,labels."more complex label"', [2]],
  ['LabelQuotedFieldPathPresentWithQuoted', 'labels."more complex label with \\\\ and \\""==present', [4]],
  [
    'LabelQuotedFieldPathPresentWithQuotedEmbed',
    'labels."more complex label with \\\\ and \\"".post==present',
    [5],
  ],
  // Beyond containerd's table: whitespace before tokens is skipped, `!=` matches absent fields.
  ['SpacesBeforeTokens', 'name == bar, labels.bar', [3]],
  ['NotEqualAbsent', 'other!=abc', [0, 1, 2, 3, 4, 5, 6, 8]],
  ['InvalidRegexpMatchesNothing', 'name~=(', []],
  ['RegexpOnAbsentField', 'other~=^$', [0, 1, 2, 3, 4, 5, 8]],
];

const errors: Array<[string, string, string]> = [
  [
    'LabelValueNoAltQuoting',
    'labels.|foo|==omg_asdf.asdf-qwer',
    'filters: parse error: [labels. >|||< foo|==omg_asdf.asdf-qwer]: invalid quote encountered',
  ],
  [
    'LabelQuotedFieldPathPresentWithQuotedEmbedInvalid',
    'labels.?"more complex label with \\\\ and \\"".post==present',
    'filters: parse error: [labels. >|?|< "more complex label with \\\\ and \\"".post==present]: expected field or quoted',
  ],
  ['TrailingComma', 'name==foo,', 'filters: parse error: [name==foo,]: expected field or quoted'],
  ['TrailingFieldSeparator', 'labels.', 'filters: parse error: [labels.]: expected field or quoted'],
  [
    'MissingValue',
    'image~=,id?=?fbaq',
    'filters: parse error: [image~= >|,|< id?=?fbaq]: expected value or quoted',
  ],
  [
    'FieldQuotedLiteralNotTerminated',
    'labels.ns/key==value',
    'filters: parse error: [labels.ns >|/|< key==value]: quoted literal not terminated',
  ],
  [
    'ValueQuotedLiteralNotTerminated',
    'labels.key==/value',
    'filters: parse error: [labels.key== >|/|< value]: quoted literal not terminated',
  ],
  // Derived from the grammar and containerd's issues.
  [
    'DashInLabelKey',
    'labels.foo-bar==x',
    'filters: parse error: [labels.foo >|-|< bar==x]: expected an operator ("=="|"!="|"~=")',
  ],
  ['SingleEquals', 'name=foo', 'filters: parse error: [name >|=|< foo]: unsupported operator "="'],
  ['TrailingSpace', 'name==foo ', 'filters: parse error: [name==foo >| |< ]: unexpected input:  '],
  ['SpaceBeforeComma', 'a==b ,c', 'filters: parse error: [a==b >| |< ,c]: unexpected input:  '],
  ['MissingValueAtEnd', 'name==', 'filters: parse error: [name==]: expected value or quoted'],
  ['SingleQuote', "'name'", "filters: parse error: [ >|'|< name']: expected field or quoted"],
  ['Null', 'na\u0000me', 'filters: parse error: [na >|\u0000|< me]: unexpected null'],
  ['RuneError', 'name==\ufffd', 'filters: parse error: [name== >|\ufffd|< ]: rune error'],
  ['IllegalEscape', 'labels."\\g"', 'filters: parse error: [labels. >|"|< \\g"]: illegal escape sequence'],
  [
    'IllegalNumericEscape',
    'labels."\\xaz"',
    'filters: parse error: [labels. >|"|< \\xaz"]: illegal numeric escape sequence',
  ],
  [
    'OctalOutOfRange',
    'labels."\\777"',
    'filters: parse error: [labels. >|"|< \\777"]: unquoting failed: quote syntax error',
  ],
  [
    'NewlineInQuote',
    'name=="a\nb"',
    'filters: parse error: [name== >|"|< a\nb"]: quoted literal not terminated',
  ],
  ['SlashQuoteForEquals', 'name==/a/', 'filters: parse error: [name== >|/|< a/]: invalid quote encountered'],
  ['DotAfterOperator', 'name==.x', 'filters: parse error: [name== >|.|< x]: expected value or quoted'],
  ['TripleEquals', 'name===x', 'filters: parse error: [name >|=|< ==x]: unsupported operator "==="'],
];

describe('filters: containerd table', () => {
  for (const [name, input, want] of matching) {
    it(`matches ${name}`, () => {
      const f = parseFilter(input);
      const got = corpus.flatMap((e, i) => (f.match(adapt(e)) ? [i] : []));
      assert.deepEqual(got, want);
    });
  }
  for (const [name, input, want] of errors) {
    it(`rejects ${name}`, () => {
      assert.throws(
        () => parseFilter(input),
        (err: unknown) => err instanceof FilterParseError && err.message === want,
      );
      assert.throws(
        () => parseFilters([input]),
        (err: unknown) => isInvalidArgument(err) && err.message === `${want}: invalid argument`,
      );
    });
  }
});

describe('parseFilters', () => {
  it('ORs the strings and matches everything for none or an empty string', () => {
    const f = parseFilters(['name==foo', 'labels.bar']);
    assert.deepEqual(
      corpus.flatMap((e, i) => (f.match(adapt(e)) ? [i] : [])),
      [0, 2, 3],
    );
    for (const all of [[], ['']]) {
      const g = parseFilters(all);
      assert.ok(corpus.every((e) => g.match(adapt(e))));
    }
  });

  it('fails the whole list when one string is bad', () => {
    assert.throws(() => parseFilters(['name==foo', 'name=foo']), isInvalidArgument);
  });

  it('unquotes values and fields', () => {
    assert.deepEqual(parseSelectors('labels."a.b/c"=="x\\ty\\u00e9\\101"'), [
      { fieldpath: ['labels', 'a.b/c'], operator: '==', value: 'x\ty\u00e9A' },
    ]);
    assert.deepEqual(parseSelectors('name~=|a/b|,name~=/a\\/b/'), [
      { fieldpath: ['name'], operator: '~=', value: 'a/b' },
      { fieldpath: ['name'], operator: '~=', value: 'a/b' },
    ]);
    assert.deepEqual(parseSelectors('name==docker.io/library/alpine:3.19'), [
      { fieldpath: ['name'], operator: '==', value: 'docker.io/library/alpine:3.19' },
    ]);
    // \x escapes are bytes: two of them form one UTF-8 character.
    assert.equal(parseSelectors('a=="\\xc3\\xa9"')[0]!.value, '\u00e9');
  });
});

describe('scanner', () => {
  const tokens = (input: string): Array<[number, TokenKind, string]> => {
    const sc = new Scanner(input);
    const out: Array<[number, TokenKind, string]> = [];
    for (;;) {
      const t = sc.scan();
      out.push([t.pos, t.kind, t.kind === 'illegal' ? `${t.text}!${sc.err}` : t.text]);
      if (t.kind === 'eof') return out;
    }
  };

  it('gives containerd token positions', () => {
    assert.deepEqual(tokens('name==value,labels.foo=value,other.bar~=match'), [
      [0, 'field', 'name'],
      [4, 'operator', '=='],
      [6, 'value', 'value'],
      [11, 'separator', ','],
      [12, 'field', 'labels'],
      [18, 'separator', '.'],
      [19, 'field', 'foo'],
      [22, 'operator', '='],
      [23, 'value', 'value'],
      [28, 'separator', ','],
      [29, 'field', 'other'],
      [34, 'separator', '.'],
      [35, 'field', 'bar'],
      [38, 'operator', '~='],
      [40, 'value', 'match'],
      [45, 'eof', ''],
    ]);
    assert.deepEqual(tokens('input~=/foo\\/bar/,id!=ff'), [
      [0, 'field', 'input'],
      [5, 'operator', '~='],
      [7, 'quoted', '/foo\\/bar/'],
      [17, 'separator', ','],
      [18, 'field', 'id'],
      [20, 'operator', '!='],
      [22, 'value', 'ff'],
      [24, 'eof', ''],
    ]);
    assert.deepEqual(tokens('foo = bar    '), [
      [0, 'field', 'foo'],
      [4, 'operator', '='],
      [6, 'value', 'bar'],
      [13, 'eof', ''],
    ]);
    assert.deepEqual(tokens('doublevalue=value value'), [
      [0, 'field', 'doublevalue'],
      [11, 'operator', '='],
      [12, 'value', 'value'],
      [18, 'field', 'value'],
      [23, 'eof', ''],
    ]);
  });

  it('reports illegal tokens and keeps going', () => {
    assert.deepEqual(tokens('foo\u0000bar'), [
      [0, 'field', 'foo'],
      [3, 'illegal', '!unexpected null'],
      [4, 'field', 'bar'],
      [7, 'eof', ''],
    ]);
    assert.deepEqual(tokens('labels.containerd.io/key==value'), [
      [0, 'field', 'labels'],
      [6, 'separator', '.'],
      [7, 'field', 'containerd'],
      [17, 'separator', '.'],
      [18, 'field', 'io'],
      [20, 'illegal', '/key==value!quoted literal not terminated'],
      [31, 'eof', ''],
    ]);
    assert.deepEqual(tokens('labels."containerd.io\nkey"==value'), [
      [0, 'field', 'labels'],
      [6, 'separator', '.'],
      [7, 'illegal', '"containerd.io\n!quoted literal not terminated'],
      [22, 'field', 'key'],
      [25, 'illegal', '"==value!quoted literal not terminated'],
      [33, 'eof', ''],
    ]);
  });
});

describe('adaptors', () => {
  const digest = `sha256:${'a'.repeat(64)}`;
  it('exposes the image fields containerd exposes', () => {
    const a = imageAdaptor({
      name: 'docker.io/library/alpine:3',
      target: { mediaType: 'application/vnd.oci.image.index.v1+json', digest, annotations: { 'a.b': 'c' } },
      labels: { 'containerd.io/gc.root': 'x' },
    });
    assert.equal(a.field(['name']), 'docker.io/library/alpine:3');
    assert.equal(a.field(['target', 'digest']), digest);
    assert.equal(a.field(['target', 'mediatype']), 'application/vnd.oci.image.index.v1+json');
    assert.equal(a.field(['target']), undefined);
    assert.equal(a.field(['target', 'size']), undefined);
    assert.equal(a.field(['target', 'mediaType']), undefined);
    assert.equal(a.field(['annotations', 'a', 'b']), 'c');
    assert.equal(a.field(['labels', 'containerd.io/gc.root']), 'x');
    assert.equal(a.field(['labels', 'nope']), undefined);
    assert.equal(a.field(['created_at']), undefined);
    const f = parseFilters(['labels."containerd.io/gc.root"==x,annotations.a.b~=^c$']);
    assert.ok(f.match(a));
  });

  it('exposes content, ingest and lease fields', () => {
    const c = contentAdaptor({ digest, labels: {} });
    assert.equal(c.field(['digest']), digest);
    assert.equal(c.field(['size']), undefined);
    assert.equal(c.field(['labels', 'x']), undefined);
    assert.ok(parseFilters(['labels.x!=y']).match(c));
    assert.equal(ingestAdaptor({ ref: 'layer-1' }).field(['ref']), 'layer-1');
    assert.ok(parseFilters(['ref~=layer-']).match(ingestAdaptor({ ref: 'layer-1' })));
    const l = leaseAdaptor({ id: 'l1', labels: { 'containerd.io/gc.expire': 'soon' } });
    assert.equal(l.field(['id']), 'l1');
    assert.equal(l.field(['labels', 'containerd.io/gc.expire']), 'soon');
  });
});

describe('filters: properties', () => {
  const anyAdaptor: Adaptor = { field: (p) => p.join('.') };

  it('never throws anything but a parse error, on any input', () => {
    fc.assert(
      fc.property(fc.string({ unit: 'binary', maxLength: 40 }), (s) => {
        try {
          parseFilter(s).match(anyAdaptor);
        } catch (err) {
          assert.ok(err instanceof FilterParseError, String(err));
          assert.ok(err.message.startsWith('filters: parse error: ['), err.message);
        }
      }),
      { numRuns: 3000 },
    );
  });

  it('never throws on inputs built from the grammar alphabet', () => {
    const alphabet = fc.constantFrom(...'ab_1.,=!~"/|\\ x\n{}[]()*+?^$'.split(''), 'labels', '牛');
    fc.assert(
      fc.property(fc.array(alphabet, { maxLength: 30 }), (parts) => {
        const s = parts.join('');
        try {
          parseFilters([s]).match(anyAdaptor);
        } catch (err) {
          assert.ok(isInvalidArgument(err), String(err));
        }
      }),
      { numRuns: 3000 },
    );
  });

  it('round-trips quoted fields and values', () => {
    fc.assert(
      fc.property(
        fc.string({ unit: 'grapheme', maxLength: 30 }),
        fc.string({ unit: 'grapheme', maxLength: 30 }),
        (key, value) => {
          assert.equal(unquote(quote(value)), value);
          const sel = parseSelectors(`labels.${quote(key)}==${quote(value)}`);
          assert.deepEqual(sel, [{ fieldpath: ['labels', key], operator: '==', value }]);
          const labels = { [key]: value };
          assert.ok(
            parseFilters([`labels.${quote(key)}==${quote(value)}`]).match(leaseAdaptor({ id: 'x', labels })),
          );
        },
      ),
      { numRuns: 1000 },
    );
  });
});
