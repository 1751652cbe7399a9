import assert from 'node:assert/strict';
import { test } from 'node:test';
import bcrypt from 'bcryptjs';
import { errorKind } from '../../errors.ts';
import { clientLine } from './fair-turns.ts';
import { HtpasswdChecker } from './htpasswd.ts';

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;

async function timed(f: () => Promise<unknown>): Promise<number> {
  const start = performance.now();
  await f();
  return performance.now() - start;
}

test('an unknown user takes as long as a wrong password of the usual cost, so timing names no users', async (t) => {
  // Two users at cost 9, one at cost 6: the stand-in for unknown users follows the cost most users have.
  const users = new Map([
    ['alice', bcrypt.hashSync('a', 9)],
    ['bob', bcrypt.hashSync('b', 9)],
    ['carol', bcrypt.hashSync('c', 6)],
  ]);
  const checker = new HtpasswdChecker(() => users);
  t.after(() => checker.close());
  await checker.check('alice', 'warm-up');
  const known: number[] = [];
  const unknown: number[] = [];
  const cheap: number[] = [];
  for (let i = 0; i < 5; i++) {
    known.push(await timed(() => checker.check('alice', `wrong${i}`)));
    unknown.push(await timed(() => checker.check(`nobody${i}`, `wrong${i}`)));
    cheap.push(await timed(() => checker.check('carol', `wrong${i}`)));
  }
  const [k, u, c] = [median(known), median(unknown), median(cheap)];
  assert.ok(u > k / 2 && u < k * 2, `unknown ${u} ms, known ${k} ms`);
  assert.ok(u > c * 3, `unknown ${u} ms, cost-6 user ${c} ms`);
  // Never a match, whatever the password.
  assert.equal(await checker.check('nobody', ''), false);
  // A file without users has no names to hide.
  const empty = new HtpasswdChecker(() => new Map());
  t.after(() => empty.close());
  assert.ok((await timed(() => empty.check('nobody', 'x'))) < k / 4);
});

test("a flood of wrong passwords from one client holds up another client's check by about one check", async (t) => {
  const users = new Map([['alice', bcrypt.hashSync('right', 8)]]);
  const checker = new HtpasswdChecker(() => users);
  t.after(() => checker.close());
  let floodDone = 0;
  const flood = Array.from({ length: 40 }, (_, i) =>
    checker.check('alice', `guess${i}`, { client: '192.0.2.1' }).finally(() => floodDone++),
  );
  assert.equal(await checker.check('alice', 'right', { client: '192.0.2.2' }), true);
  // In arrival order it would have waited for all 40; in turns, for those running and one more.
  assert.ok(floodDone <= 4, `${floodDone} of the flood's checks ran first`);
  assert.deepEqual(new Set(await Promise.all(flood)), new Set([false]));
});

test('when the waiting room is full the longest line makes room: the flooding client is turned away, not the newcomer', async (t) => {
  const users = new Map([['alice', bcrypt.hashSync('right', 8)]]);
  const checker = new HtpasswdChecker(() => users, { maxWaiting: 8 });
  t.after(() => checker.close());
  const outcomes: string[] = [];
  const flood = Array.from({ length: 20 }, (_, i) =>
    checker.check('alice', `guess${i}`, { client: '2001:db8:1:2::7' }).then(
      (ok) => outcomes.push(String(ok)),
      (err: unknown) => outcomes.push(errorKind(err) ?? String(err)),
    ),
  );
  // Two run, eight wait, ten are turned away at once (429 over HTTP).
  await new Promise((r) => setImmediate(r));
  assert.equal(outcomes.filter((o) => o === 'ResourceExhausted').length, 10);
  // The same /64 is the same client.
  await assert.rejects(
    checker.check('alice', 'x', { client: '2001:db8:1:2::8' }),
    /too many password checks/,
  );
  assert.equal(await checker.check('alice', 'right', { client: '198.51.100.7' }), true);
  await Promise.all(flood);
  assert.equal(outcomes.filter((o) => o === 'ResourceExhausted').length, 11);
  assert.equal(outcomes.filter((o) => o === 'false').length, 9);
});

test('a check whose request went away stops waiting and is never run', async (t) => {
  const users = new Map([['alice', bcrypt.hashSync('right', 8)]]);
  const checker = new HtpasswdChecker(() => users);
  t.after(() => checker.close());
  await checker.check('alice', 'warm-up');
  const gone = new AbortController();
  const first = [checker.check('alice', 'a'), checker.check('alice', 'b')];
  const waiting = Array.from({ length: 20 }, () =>
    checker.check('alice', 'c', { client: '192.0.2.1', signal: gone.signal }),
  );
  gone.abort(new Error('client went away'));
  for (const w of waiting) await assert.rejects(w, /client went away/);
  const ran = await timed(() => checker.check('alice', 'right', { client: '192.0.2.1' }));
  const one = await timed(() => checker.check('alice', 'wrong'));
  await Promise.all(first);
  // Behind at most the two already running, not the twenty.
  assert.ok(ran < one * 6, `${ran} ms, one check ${one} ms`);
});

test('client lines: an IPv4 address, an IPv4-mapped address as IPv4, an IPv6 address by its /64', () => {
  assert.equal(clientLine('192.0.2.1'), '192.0.2.1');
  assert.equal(clientLine('::ffff:192.0.2.1'), '192.0.2.1');
  assert.equal(clientLine('2001:db8:0:1::5'), '2001:db8:0:1::/64');
  assert.equal(clientLine('2001:0db8:0000:0001:ffff::1'), '2001:db8:0:1::/64');
  assert.equal(clientLine('2001:db8::1'), '2001:db8:0:0::/64');
  assert.equal(clientLine('fe80::1%eth0'), 'fe80:0:0:0::/64');
  assert.equal(clientLine('::1'), '0:0:0:0::/64');
  assert.equal(clientLine(undefined), '');
});
