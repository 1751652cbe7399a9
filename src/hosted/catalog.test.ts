import assert from 'node:assert/strict';
import { test } from 'node:test';
import fc from 'fast-check';
import { type CatalogPacing, catalogPage, type FirstName, nextRepository } from './catalog.ts';
import { isRepository } from './names.ts';

/** A sorted list of names read as the database reads them, counting the seeks. */
function names(list: readonly string[]): { first: FirstName; seeks: () => number } {
  const sorted = [...list].sort();
  let seeks = 0;
  return {
    first: (from, inclusive) => {
      seeks++;
      let lo = 0;
      let hi = sorted.length;
      while (lo < hi) {
        const mid = (lo + hi) >> 1;
        if (inclusive ? sorted[mid]! < from : sorted[mid]! <= from) lo = mid + 1;
        else hi = mid;
      }
      return sorted[lo];
    },
    seeks: () => seeks,
  };
}

/** docker-registry's order of repository names: byte order with `/` below every other character. */
const catalogOrder = (a: string, b: string) => {
  const x = a.replaceAll('/', '\0');
  const y = b.replaceAll('/', '\0');
  return x < y ? -1 : x > y ? 1 : 0;
};

/** What the catalog should list: every repository with a record, in docker-registry's order. */
function expected(list: readonly string[]): string[] {
  const repos = new Set<string>();
  for (const n of list) {
    const m = /^([^:@]+)[:@]/.exec(n);
    if (m && isRepository(m[1]!)) repos.add(m[1]!);
  }
  return [...repos].sort(catalogOrder);
}

const D = `sha256:${'a'.repeat(64)}`;

test('repositories come component by component, as docker-registry lists them', async () => {
  // In byte order `a-b:1`, `a.b:1`, `a/b@…` and `a1:1` come before `a:1`, and `a-b:1` before `a/b@…`.
  const list = ['a-b:1', 'a.b:1', `a/b@${D}`, 'a1:1', 'a:1', `a@${D}`, 'a_b:1', 'aa:x', 'b:1', 'b/c/d:1'];
  const { first } = names(list);
  assert.deepEqual((await catalogPage(first, 100)).repositories, [
    'a',
    'a/b',
    'a-b',
    'a.b',
    'a1',
    'a_b',
    'aa',
    'b',
    'b/c/d',
  ]);
  assert.equal(nextRepository(first, 'a'), 'a/b');
  assert.equal(nextRepository(first, 'a/b'), 'a-b');
  assert.equal(nextRepository(first, 'a-b'), 'a.b');
  assert.equal(nextRepository(first, 'a1'), 'a_b');
  assert.equal(nextRepository(first, 'b'), 'b/c/d');
  assert.equal(nextRepository(first, 'b/c/d'), undefined);
  // `last` is compared as docker-registry compares it, whether or not it is a repository.
  assert.equal(nextRepository(first, 'a/'), 'a/b');
  assert.equal(nextRepository(first, 'a/z'), 'a-b');
  assert.equal(nextRepository(first, 'a:1'), 'a_b');
});

test('a repository without records of its own is passed over for those below it', async () => {
  const { first } = names(['a/b/c:1', 'a/b-c/d:1', 'a/b.c:1', 'a/b0/e:1', 'x/y/z:1']);
  assert.deepEqual((await catalogPage(first, 100)).repositories, [
    'a/b/c',
    'a/b-c/d',
    'a/b.c',
    'a/b0/e',
    'x/y/z',
  ]);
  assert.equal(nextRepository(first, 'a/b'), 'a/b/c');
  assert.equal(nextRepository(first, 'a/b/c'), 'a/b-c/d');
  assert.equal(nextRepository(first, 'a/b-c'), 'a/b-c/d');
});

test('names that are no record of a repository are passed over', async () => {
  const { first } = names(['Not A Repo', 'a:1', 'a;x', 'b', 'c@', 'c@\u007fjunk', 'c:1', 'UPPER:1', 'd:1']);
  assert.deepEqual((await catalogPage(first, 100)).repositories, ['a', 'c', 'd']);
});

test('a page says whether more follow; n=0 is an empty page', async () => {
  const { first } = names(['a:1', 'b:1', 'c:1']);
  assert.deepEqual(await catalogPage(first, 2), { repositories: ['a', 'b'], more: true });
  assert.deepEqual(await catalogPage(first, 2, 'b'), { repositories: ['c'], more: false });
  assert.deepEqual(await catalogPage(first, 1, 'b'), { repositories: ['c'], more: false });
  assert.deepEqual(await catalogPage(first, 0), { repositories: [], more: false });
  // `last` need not be a repository.
  assert.deepEqual(await catalogPage(first, 5, 'a0'), { repositories: ['b', 'c'], more: false });
});

test('a page of n costs seeks for n repositories, not for their records', async () => {
  const list: string[] = [];
  for (let r = 0; r < 50; r++)
    for (let t = 0; t < 40; t++) list.push(`repo${String(r).padStart(2, '0')}:t${t}`);
  const counted = names(list);
  assert.equal((await catalogPage(counted.first, 10)).repositories.length, 10);
  // The first step also asks for the records of `repoNN`'s digit-led prefixes (`repo`, `repoN`); each step
  // looks below the last repository, past its records and at the next one.
  assert.ok(counted.seeks() <= 11 * 4, `${counted.seeks()} seeks`);
});

test('paging through any set of names lists what one listing of them lists', async () => {
  const component = fc.constantFrom('a', 'b', 'a0', '1', 'ab');
  const sep = fc.constantFrom('-', '.', '_', '/', '__', '');
  const repo = fc
    .array(fc.tuple(sep, component), { minLength: 1, maxLength: 4 })
    .map((parts) => parts.map(([s, c], i) => (i === 0 ? c : s + c)).join(''));
  const record = fc.tuple(repo, fc.constantFrom(':1', ':v2', `@${D}`, ';junk', '')).map(([r, s]) => r + s);
  await fc.assert(
    fc.asyncProperty(
      fc.uniqueArray(record, { maxLength: 30 }),
      fc.integer({ min: 1, max: 4 }),
      fc.option(fc.integer({ min: 1, max: 40 }), { nil: undefined }),
      async (list, n, budget) => {
        const { first } = names(list);
        const got: string[] = [];
        let last: string | undefined;
        for (let pages = 0; pages < 100; pages++) {
          const page = await catalogPage(first, n, last, { budget, slice: 3 });
          got.push(...page.repositories);
          if (!page.more) break;
          last = page.repositories.at(-1);
        }
        assert.deepEqual(got, expected(list));
      },
    ),
    { numRuns: 500 },
  );
});

test('the repository after any `last` is the first docker-registry would list after it', async () => {
  const piece = fc.constantFrom('a', 'b', 'a0', '1', 'ab', '-', '.', '_', '/', ':', '@', 'A');
  const text = fc.array(piece, { maxLength: 6 }).map((p) => p.join(''));
  fc.assert(
    fc.property(fc.uniqueArray(text, { maxLength: 30 }), text, (list, last) => {
      const { first } = names(list);
      const want = expected(list).find((r) => catalogOrder(last, r) < 0);
      assert.equal(nextRepository(first, last), want);
    }),
    { numRuns: 2000 },
  );
});

test('a `last` longer than any repository name is read only as far as a name can go', async () => {
  const list = ['a:1', 'a/b:1', 'b:1', `${'c'.repeat(255)}:1`];
  const asked: string[] = [];
  const { first } = names(list);
  const spy: FirstName = (from, inclusive) => {
    asked.push(from);
    return first(from, inclusive);
  };
  // As long as a request's line lets it be: split at every `/` and rejoined per component, such a `last`
  // cost time in its length squared (about a second at this length) for an answer its first 256
  // characters settle, every name being at most 255.
  for (const last of [
    '/'.repeat(16_000),
    'a/'.repeat(8_000),
    'a'.repeat(16_000),
    `${'c'.repeat(255)}${'/'.repeat(16_000)}`,
  ]) {
    asked.length = 0;
    const want = expected(list).find((r) => catalogOrder(last, r) < 0);
    assert.equal(nextRepository(spy, last), want);
    assert.equal(nextRepository(first, last.slice(0, 256)), want);
    assert.ok(asked.length <= 300, `${asked.length} seeks`);
    const longest = Math.max(...asked.map((s) => s.length));
    assert.ok(longest <= 2 * 256 + 2, `asked from ${longest} characters`);
  }
});

/**
 * Names that cost a lookup for each of their `-` and digits when a step asks about prefixes from the
 * shortest up: each of 26×36 repositories is two characters and `-0` repeated to 254, and a step to one
 * asks whether the shorter prefixes ending before `-` or `0` have records (in byte order those would come
 * after it). A page of them all took some 240,000 lookups.
 */
const costly = (): string[] => {
  const letters = 'abcdefghijklmnopqrstuvwxyz';
  const list: string[] = [];
  for (const a of letters)
    for (const b of `${letters}0123456789`) list.push(`${a}${b}${'-0'.repeat(126)}:v1`);
  return list;
};

/** More than a step to one of those makes, even asking about each of its prefixes. */
const STEP_LOOKUPS = 2 * 255 + 20;

test('a step asks about prefixes from both ends, so names of `-` and digits cost a few lookups each', async () => {
  const costlyNames = costly();
  const counted = names(costlyNames);
  assert.deepEqual(await catalogPage(counted.first, 1000), {
    repositories: expected(costlyNames),
    more: false,
  });
  assert.ok(counted.seeks() <= 6 * costlyNames.length, `${counted.seeks()} lookups`);
  // The other way round: every prefix has records, so the shortest is asked about first.
  const nested: string[] = [];
  for (const a of 'abcdefghij') for (let j = 1; j <= 120; j++) nested.push(`${a}b${'-0'.repeat(j)}:v1`);
  const again = names(nested);
  const page = await catalogPage(again.first, 1000);
  assert.deepEqual(page.repositories, expected(nested).slice(0, 1000));
  assert.ok(again.seeks() <= 8 * 1000, `${again.seeks()} lookups`);
});

test('a catalog request spends a bounded number of lookups, handing the event loop on between slices', async () => {
  const list = costly();
  const counted = names(list);
  const slices: number[] = [];
  let mark = 0;
  const budget = 1000;
  const slice = 100;
  const pacing: Partial<CatalogPacing> = {
    budget,
    slice,
    pause: async () => {
      slices.push(counted.seeks() - mark);
      mark = counted.seeks();
    },
  };
  const got: string[] = [];
  let last: string | undefined;
  let requests = 0;
  for (;;) {
    const before = counted.seeks();
    const page = await catalogPage(counted.first, 1000, last, pacing);
    requests++;
    const spent = counted.seeks() - before;
    assert.ok(spent <= budget + STEP_LOOKUPS, `request ${requests}: ${spent} lookups`);
    assert.ok(page.repositories.length > 0 || !page.more, 'a page that says more moves on');
    got.push(...page.repositories);
    if (!page.more) break;
    // What the Link carries: the last repository listed.
    last = page.repositories.at(-1);
    slices.push(counted.seeks() - mark);
    mark = counted.seeks();
  }
  assert.deepEqual(got, expected(list));
  assert.ok(requests > 1, `${requests} requests`);
  for (const s of slices) assert.ok(s <= slice + STEP_LOOKUPS, `${s} lookups in one slice`);
});

test('a page cut short by its budget still lists at least one repository, and goes on where it stopped', async () => {
  const list = costly();
  const { first } = names(list);
  const all = expected(list);
  const one = await catalogPage(first, 1000, undefined, { budget: 1 });
  assert.deepEqual(one, { repositories: all.slice(0, 1), more: true });
  const next = await catalogPage(first, 1000, all[0], { budget: 1 });
  assert.deepEqual(next, { repositories: all.slice(1, 2), more: true });
  const end = await catalogPage(first, 1000, all.at(-2), { budget: 1 });
  assert.deepEqual(end, { repositories: all.slice(-1), more: true });
  assert.deepEqual(await catalogPage(first, 1000, all.at(-1), { budget: 1 }), {
    repositories: [],
    more: false,
  });
});

test('a walk stops between slices when its pause throws (its request is gone)', async () => {
  const { first } = names(costly());
  let pauses = 0;
  const gone = new Error('client went away');
  await assert.rejects(
    catalogPage(first, 1000, undefined, {
      slice: 100,
      pause: async () => {
        if (++pauses === 2) throw gone;
      },
    }),
    (e) => e === gone,
  );
  assert.equal(pauses, 2);
});
