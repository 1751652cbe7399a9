import assert from 'node:assert/strict';
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { copyTreeXattrs, getXattrs, setXattr, XattrDumper } from './xattr.ts';

/** A tree with one file carrying `user.n` = `value`, and its twin without attributes. */
async function pair(root: string, name: string, value: string): Promise<{ src: string; dst: string }> {
  const src = join(root, `${name}-src`);
  const dst = join(root, `${name}-dst`);
  for (const d of [src, dst]) {
    await mkdir(join(d, 'sub'), { recursive: true });
    await writeFile(join(d, 'sub/f'), 'x');
  }
  await setXattr(join(src, 'sub/f'), 'user.n', Buffer.from(value));
  return { src, dst };
}

describe('copyTreeXattrs through the dump helper', () => {
  let work: string;
  const dumper = new XattrDumper();
  before(async () => {
    work = await mkdtemp(join(tmpdir(), 'xattr-'));
    dumper.start();
  });
  after(async () => {
    dumper.stop();
    await rm(work, { recursive: true, force: true });
  });

  test('many dumps at once each get their own tree', async () => {
    const pairs = await Promise.all(Array.from({ length: 12 }, (_, i) => pair(work, `p${i}`, `v${i}`)));
    await Promise.all(pairs.map((p) => copyTreeXattrs(p.src, p.dst, dumper)));
    for (const [i, p] of pairs.entries()) {
      assert.deepEqual(await getXattrs(join(p.dst, 'sub/f')), { 'user.n': Buffer.from(`v${i}`) });
      assert.deepEqual(await getXattrs(join(p.dst, 'sub')), {});
    }
  });

  test('a tree without attributes copies nothing', async () => {
    const src = join(work, 'plain-src');
    const dst = join(work, 'plain-dst');
    for (const d of [src, dst]) await mkdir(join(d, 'a'), { recursive: true });
    await copyTreeXattrs(src, dst, dumper);
    assert.deepEqual(await getXattrs(join(dst, 'a')), {});
  });

  test('a missing tree fails, and the next dump still works', async () => {
    await assert.rejects(copyTreeXattrs(join(work, 'missing'), join(work, 'nowhere'), dumper), /exited with/);
    const p = await pair(work, 'after-failure', 'ok');
    await copyTreeXattrs(p.src, p.dst, dumper);
    assert.deepEqual(await getXattrs(join(p.dst, 'sub/f')), { 'user.n': Buffer.from('ok') });
  });

  test('paths the helper cannot take (a newline) go to a process of their own', async () => {
    const p = await pair(work, 'new\nline', 'nl');
    await copyTreeXattrs(p.src, p.dst, dumper);
    assert.deepEqual(await getXattrs(join(p.dst, 'sub/f')), { 'user.n': Buffer.from('nl') });
  });

  test('a stopped dumper starts a new shell on its next dump; no dumper forks getfattr per call', async () => {
    const own = new XattrDumper();
    const first = own.start();
    own.stop();
    await new Promise((resolve) => first.once('exit', resolve));
    const p = await pair(work, 'restarted', 'again');
    await copyTreeXattrs(p.src, p.dst, own);
    assert.notEqual(own.start(), first);
    own.stop();
    const q = await pair(work, 'no-dumper', 'alone');
    await copyTreeXattrs(q.src, q.dst);
    assert.deepEqual(await getXattrs(join(q.dst, 'sub/f')), { 'user.n': Buffer.from('alone') });
  });
});
