import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { test } from 'node:test';
import type { Digest } from '../../oci/digest.ts';
import { chainIds, topChainId } from './chain.ts';

const d = (c: string) => `sha256:${c.repeat(64)}` as Digest;

test('chain IDs: the first is the diff ID, each next hashes "parent diff"', () => {
  const diffs = [d('a'), d('b'), d('c')];
  const chain = chainIds(diffs);
  assert.equal(chain[0], diffs[0]);
  const h = (s: string) => `sha256:${createHash('sha256').update(s).digest('hex')}`;
  assert.equal(chain[1], h(`${d('a')} ${d('b')}`));
  assert.equal(chain[2], h(`${chain[1]} ${d('c')}`));
  assert.equal(topChainId(diffs), chain[2]);
});

test('chain IDs depend on order, and an empty stack has none', () => {
  assert.notEqual(topChainId([d('a'), d('b')]), topChainId([d('b'), d('a')]));
  assert.deepEqual(chainIds([]), []);
  assert.throws(() => topChainId([]), { kind: 'InvalidArgument' });
});
