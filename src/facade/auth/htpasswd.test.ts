import assert from 'node:assert/strict';
import { test } from 'node:test';
import bcrypt from 'bcryptjs';
import { errorKind } from '../../errors.ts';
import { clientLine } from './fair-turns.ts';
import { HtpasswdChecker } from './htpasswd.ts';

/** A checker whose bcrypt checks are recorded (the hash each was made against) and then run. */
function recording(users: Map<string, string>, options: { maxWaiting?: number } = {}) {
  const hashes: string[] = [];
  const checker = new HtpasswdChecker(() => users, {
    ...options,
    compare: async (password, hash) => {
      hashes.push(hash);
      return bcrypt.compare(password, hash);
    },
  });
  return { checker, hashes };
}

test("an unknown user's password is checked against a stand-in at the cost most users have, so timing names no users", async (t) => {
  // Two users at cost 9, one at cost 6: the stand-in for unknown users follows the cost most users have.
  const users = new Map([
    ['alice', bcrypt.hashSync('a', 9)],
    ['bob', bcrypt.hashSync('b', 9)],
    ['carol', bcrypt.hashSync('c', 6)],
  ]);
  const { checker, hashes } = recording(users);
  t.after(() => checker.close());
  assert.equal(await checker.check('alice', 'wrong'), false);
  assert.deepEqual(hashes, [users.get('alice')]);
  assert.equal(await checker.check('nobody', 'wrong'), false);
  assert.equal(await checker.check('nobody', ''), false);
  assert.equal(hashes.length, 3);
  const standIn = hashes[1]!;
  assert.match(standIn, /^\$2b\$09\$[./A-Za-z0-9]{53}$/);
  assert.ok(![...users.values()].includes(standIn));
  assert.equal(bcrypt.getRounds(standIn), 9);
  // The same stand-in while the file stays, so every unknown user costs the same.
  assert.equal(hashes[2], standIn);
  // A file without users has no names to hide: nothing is checked.
  const empty = recording(new Map());
  t.after(() => empty.checker.close());
  assert.equal(await empty.checker.check('nobody', 'x'), false);
  assert.deepEqual(empty.hashes, []);
});

test('an unknown user waits its turn and counts against the waiting room as a known one does', async (t) => {
  const users = new Map([['alice', bcrypt.hashSync('right', 8)]]);
  const { checker } = recording(users, { maxWaiting: 2 });
  t.after(() => checker.close());
  const outcomes: string[] = [];
  const flood = Array.from({ length: 6 }, (_, i) =>
    checker.check(`nobody${i}`, 'guess', { client: '192.0.2.1' }).then(
      (ok) => outcomes.push(String(ok)),
      (err: unknown) => outcomes.push(errorKind(err) ?? String(err)),
    ),
  );
  await Promise.all(flood);
  // Two run, two wait, two are turned away: as for wrong passwords of a known user.
  assert.deepEqual(outcomes.sort(), [
    'ResourceExhausted',
    'ResourceExhausted',
    'false',
    'false',
    'false',
    'false',
  ]);
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
  const { checker, hashes } = recording(users);
  t.after(() => checker.close());
  const first = [checker.check('alice', 'a'), checker.check('alice', 'b')];
  const gone = new AbortController();
  const waiting = Array.from({ length: 20 }, () =>
    checker.check('alice', 'c', { client: '192.0.2.1', signal: gone.signal }),
  );
  gone.abort(new Error('client went away'));
  for (const w of waiting) await assert.rejects(w, /client went away/);
  assert.equal(await checker.check('alice', 'right', { client: '192.0.2.1' }), true);
  await Promise.all(first);
  // The two that ran before and the last one: none of the twenty.
  assert.equal(hashes.length, 3);
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
