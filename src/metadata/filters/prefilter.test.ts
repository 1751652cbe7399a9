import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { encodeMap } from '../db.ts';
import { parseSelectors } from './filter.ts';
import { type PrefilterColumns, prefilterOf } from './prefilter.ts';

const COLUMNS: PrefilterColumns = {
  exact: [
    [['name'], 'name'],
    [['target', 'digest'], 'target_digest'],
  ],
  jsonMaps: { labels: 'labels', annotations: 'target_annotations' },
};

const pre = (...filters: string[]) => prefilterOf(filters.map(parseSelectors), COLUMNS);

describe('prefilterOf', () => {
  it('turns a label equality into a substring test on the stored JSON', () => {
    const p = pre('labels."bench.group"==7');
    assert.deepEqual(p, { sql: 'instr(labels, ?) > 0', params: ['"bench.group":"7"'] });
    // The needle is what encodeMap writes for that entry.
    assert.ok(encodeMap({ a: 'x', 'bench.group': '7' }).includes(p!.params[0]!));
  });

  it('joins the rest of a map path with dots, as the adaptor looks keys up', () => {
    assert.deepEqual(pre('labels.a.b==c')?.params, ['"a.b":"c"']);
  });

  it('JSON-quotes keys and values holding quotes, backslashes and non-ASCII', () => {
    const key = 'k"\\é';
    const value = 'v:"x",\\\u2028';
    const p = pre(`labels."k\\"\\\\é"=="v:\\"x\\",\\\\\u2028"`);
    assert.deepEqual(p?.params, [`${JSON.stringify(key)}:${JSON.stringify(value)}`]);
    assert.ok(encodeMap({ [key]: value }).includes(p!.params[0]!));
  });

  it('tests presence of a map key by its quoted key and colon', () => {
    assert.deepEqual(pre('annotations.foo'), { sql: 'instr(target_annotations, ?) > 0', params: ['"foo":'] });
  });

  it('uses equality for exact columns, matching the whole field path', () => {
    assert.deepEqual(pre('target.digest==sha256:ab'), { sql: 'target_digest = ?', params: ['sha256:ab'] });
    assert.equal(pre('"target.digest"==sha256:ab'), undefined);
    assert.equal(pre('target==x'), undefined);
  });

  it('ANDs what a filter allows and ORs the filters', () => {
    assert.deepEqual(pre('name==a,labels.x==1,labels.y!=2', 'labels.z'), {
      sql: '((name = ? AND instr(labels, ?) > 0) OR instr(labels, ?) > 0)',
      params: ['a', '"x":"1"', '"z":'],
    });
  });

  it('gives up when any filter has nothing SQL can check', () => {
    assert.equal(pre(), undefined);
    assert.equal(pre(''), undefined);
    assert.equal(pre('labels.x==1', 'name~=a'), undefined);
    assert.equal(pre('labels.x!=1'), undefined);
    assert.equal(pre('labels==x'), undefined);
    assert.equal(pre('labels'), undefined);
    assert.equal(pre('target.mediatype==x'), undefined, 'not among these columns');
    assert.equal(pre('unknown.field==x'), undefined);
  });

  it('gives up past 16 filters rather than build a statement per count', () => {
    const many = Array.from({ length: 17 }, (_, i) => `labels.k==${i}`);
    assert.equal(pre(...many), undefined);
    assert.equal(pre(...many.slice(0, 16))?.params.length, 16);
  });
});
