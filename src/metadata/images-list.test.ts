// List reads only the rows an SQL prefilter lets through; these tests check that it never drops an image
// the filter itself accepts (and keeps containerd's order), for random images and filters with awkward
// keys and values.
import assert from 'node:assert/strict';
import { afterEach, beforeEach, describe, it } from 'node:test';
import fc from 'fast-check';
import { digestOf } from '../oci/digest.ts';
import { imageAdaptor } from './filters/adaptors.ts';
import { parseStoreFilters } from './filters/filter.ts';
import { ImageStore } from './images.ts';
import { goQuote } from './labels.ts';
import { openTestDb, type TestDb } from './test-db.ts';

const NS = 'default';

let t: TestDb;
let store: ImageStore;
beforeEach(() => {
  t = openTestDb();
  store = new ImageStore(t.db);
});
afterEach(() => t.cleanup());

/** What the filter accepts among all images, in name (byte) order: List without any prefilter. */
async function reference(filters: string[]): Promise<string[]> {
  const filter = parseStoreFilters(filters);
  return (await store.list(NS, [])).filter((img) => filter.match(imageAdaptor(img))).map((img) => img.name);
}

// Characters that JSON or the filter syntax treat specially, plus look-alikes of the JSON the prefilter
// searches for (`":"`), non-ASCII and a line separator.
const text = fc
  .array(fc.constantFrom('a', 'b', '.', '"', '\\', ':', ',', ' ', '=', 'é', '\u2028', '{', '}', '1'), {
    minLength: 1,
    maxLength: 5,
  })
  .map((cs) => cs.join(''));

describe('ImageStore.list with the SQL prefilter', () => {
  it('returns exactly what the filter accepts, in name order', async () => {
    await fc.assert(
      fc.asyncProperty(
        fc.array(
          fc.tuple(fc.dictionary(text, text, { maxKeys: 3 }), fc.dictionary(text, text, { maxKeys: 2 })),
          {
            minLength: 1,
            maxLength: 8,
          },
        ),
        fc.array(
          fc.array(
            fc.oneof(
              fc.tuple(fc.constantFrom('labels', 'annotations'), text, fc.constantFrom('==', '!=', ''), text),
              fc.tuple(
                fc.constantFrom('name', 'target.digest', 'target.mediatype'),
                fc.constant(''),
                fc.constantFrom('==', '~='),
                text,
              ),
            ),
            { minLength: 1, maxLength: 3 },
          ),
          { maxLength: 3 },
        ),
        fc.nat(),
        async (images, branches, seed) => {
          t.cleanup();
          t = openTestDb();
          store = new ImageStore(t.db);
          const all = images.map(([labels, annotations], i) => {
            const name = `img-${(i * 7919 + seed) % 1000}-${i}`;
            store.create(NS, {
              name,
              labels,
              target: { mediaType: 'application/x.test', digest: digestOf(name), size: 1, annotations },
            });
            return { name, labels, annotations };
          });
          // Some selectors name entries that exist, so filters hit as well as miss.
          const pick = all[seed % all.length]!;
          const filters = branches.map((sels) =>
            sels
              .map(([field, key, op, value], j) => {
                const existing = Object.entries(field === 'labels' ? pick.labels : pick.annotations)[j];
                const [k, v] = existing && (seed + j) % 2 === 0 ? existing : [key, value];
                if (field === 'labels' || field === 'annotations') {
                  return op === '' ? `${field}.${goQuote(k)}` : `${field}.${goQuote(k)}${op}${goQuote(v)}`;
                }
                const exact = field === 'name' && (seed + j) % 3 === 0 ? pick.name : value;
                return op === '~='
                  ? `${field}~=${goQuote(exact.replace(/[^a-z0-9]/g, ''))}`
                  : `${field}==${goQuote(exact)}`;
              })
              .join(','),
          );
          assert.deepEqual(
            (await store.list(NS, filters)).map((i) => i.name),
            await reference(filters),
            JSON.stringify(filters),
          );
        },
      ),
      { numRuns: 300 },
    );
  });

  it('finds labels by key and value among many images, and keeps statements bounded', async () => {
    for (let i = 0; i < 200; i++) {
      store.create(NS, {
        name: `app-${String(i).padStart(3, '0')}`,
        labels: { group: String(i % 10), 'x.y': i % 2 ? 'odd' : 'even', quote: 'a"b' },
        target: { mediaType: 'application/x.test', digest: digestOf(String(i)), size: 1 },
      });
    }
    const names = async (filters: string[]) => (await store.list(NS, filters)).map((i) => i.name);
    assert.deepEqual(await names(['labels.group==3']), await reference(['labels.group==3']));
    assert.equal((await names(['labels.group==3'])).length, 20);
    assert.deepEqual(await names(['labels."x.y"==odd,labels.group==3']), await names(['labels.group==3']));
    assert.deepEqual(await names(['labels.x.y==even,labels.group==3']), []);
    // An unquoted dotted path names the key with the dots.
    assert.deepEqual(await names(['labels.x.y==odd']), await names(['labels."x.y"==odd']));
    assert.equal((await names(['labels.x.y==odd'])).length, 100);
    assert.equal((await names(['labels.quote=="a\\"b"'])).length, 200);
    assert.equal((await names(['labels.group==1', 'labels.group==2'])).length, 40);
    assert.equal((await names(['labels.group', 'name==app-000'])).length, 200);
    // A value that is a prefix of another must not match it.
    store.create(NS, {
      name: 'zz',
      labels: { group: '33' },
      target: { mediaType: 'application/x.test', digest: digestOf('zz'), size: 1 },
    });
    assert.equal((await names(['labels.group==3'])).length, 20);
    // Many shapes of filter: each gets a statement, the oldest are dropped, answers stay right.
    for (let n = 1; n <= 40; n++) {
      const filters = Array.from({ length: (n % 16) + 1 }, (_, i) => `labels.group==${i}`);
      assert.equal((await names(filters)).length, Math.min(10, (n % 16) + 1) * 20);
    }
  });
});
