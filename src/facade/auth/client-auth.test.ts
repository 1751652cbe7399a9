import assert from 'node:assert/strict';
import { generateKeyPairSync } from 'node:crypto';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import bcrypt from 'bcryptjs';
import { SignJWT } from 'jose';
import { type AuthDecision, ClientAuth, type ClientAuthConfig } from './client-auth.ts';
import { parseHtpasswd } from './htpasswd.ts';

let dir: string;
const ec = generateKeyPairSync('ec', { namedCurve: 'P-256' });
const other = generateKeyPairSync('ec', { namedCurve: 'P-256' });
const basic = (user: string, password: string) =>
  `Basic ${Buffer.from(`${user}:${password}`).toString('base64')}`;
const need = [{ repository: 'remote/ws1', action: 'pull' as const }];

before(async () => {
  dir = await mkdtemp(join(tmpdir(), 'strata-auth-test-'));
  await writeFile(join(dir, 'htpasswd'), `# users\nalice:${bcrypt.hashSync('wonderland', 4)}\n`);
  await writeFile(join(dir, 'key.pem'), ec.publicKey.export({ type: 'spki', format: 'pem' }));
});
after(() => rm(dir, { recursive: true, force: true }));

function config(over: Partial<ClientAuthConfig> = {}): ClientAuthConfig {
  return {
    basicRealm: 'strata facade',
    basicCacheMs: 60_000,
    htpasswd: join(dir, 'htpasswd'),
    token: {
      realm: 'http://127.0.0.1:1/token',
      service: 'facade',
      issuer: 'issuer',
      keys: join(dir, 'key.pem'),
    },
    ...over,
  };
}

async function token(
  claims: Record<string, unknown>,
  opts: { key?: typeof ec.privateKey; exp?: number; iss?: string; aud?: string } = {},
) {
  const now = Math.floor(Date.now() / 1000);
  return new SignJWT(claims)
    .setProtectedHeader({ alg: 'ES256' })
    .setIssuer(opts.iss ?? 'issuer')
    .setAudience(opts.aud ?? 'facade')
    .setIssuedAt(now)
    .setExpirationTime(opts.exp ?? now + 300)
    .sign(opts.key ?? ec.privateKey);
}

const pull = (name: string) => ({ access: [{ type: 'repository', name, actions: ['pull'] }] });

function refused(d: AuthDecision, status: number): Extract<AuthDecision, { ok: false }> {
  assert.equal(d.ok, false);
  if (d.ok) throw new Error('unreachable');
  assert.equal(d.status, status);
  return d;
}

test('htpasswd: bcrypt only, one line per user, mistakes named by line', () => {
  assert.equal(parseHtpasswd(`a:${bcrypt.hashSync('x', 4)}\n\n# c\n`, 'f').size, 1);
  assert.throws(() => parseHtpasswd('a:$apr1$abc$def\n', 'f'), /f:1: user a: only bcrypt/);
  assert.throws(() => parseHtpasswd('nocolon\n', 'f'), /f:1: want user:hash/);
  const h = bcrypt.hashSync('x', 4);
  assert.throws(() => parseHtpasswd(`a:${h}\na:${h}\n`, 'f'), /f:2: user a appears twice/);
  // bcrypt takes costs 04 to 31: any other would fail every check of the user's password.
  assert.equal(parseHtpasswd(`a:${h.replace('$04$', '$31$')}\n`, 'f').size, 1);
  for (const cost of ['03', '32', '99']) {
    assert.throws(
      () => parseHtpasswd(`a:${h.replace('$04$', `$${cost}$`)}\n`, 'f'),
      /f:1: user a: bcrypt cost/,
    );
  }
});

test('Basic: right password passes, wrong password and unknown user get 401 with both challenges', async () => {
  const auth = await ClientAuth.open(config());
  try {
    assert.deepEqual(await auth.authorize(basic('alice', 'wonderland'), need), { ok: true, user: 'alice' });
    // Cached: the second check is answered without bcrypt, and still only for the right password.
    assert.deepEqual(await auth.authorize(basic('alice', 'wonderland'), need), { ok: true, user: 'alice' });
    const wrong = refused(await auth.authorize(basic('alice', 'nope'), need), 401);
    assert.equal(wrong.code, 'UNAUTHORIZED');
    assert.deepEqual(wrong.challenges, [
      'Bearer realm="http://127.0.0.1:1/token",service="facade",scope="repository:remote/ws1:pull"',
      'Basic realm="strata facade",charset="UTF-8"',
    ]);
    refused(await auth.authorize(basic('bob', 'wonderland'), need), 401);
    refused(await auth.authorize('Basic !!!', need), 401);
  } finally {
    auth.close();
  }
});

test('passwords are checked beside the event loop, not on it', async (t) => {
  // bcryptjs is plain JavaScript: a check on this thread would hold up every other request for its cost,
  // and a flood of wrong passwords would keep it busy.
  const onThisThread = [t.mock.method(bcrypt, 'compare'), t.mock.method(bcrypt, 'compareSync')];
  const auth = await ClientAuth.open(config({ token: undefined }), { watch: false });
  try {
    assert.deepEqual(await auth.authorize(basic('alice', 'wonderland'), need), { ok: true, user: 'alice' });
    refused(await auth.authorize(basic('alice', 'nope'), need), 401);
    for (const m of onThisThread) assert.equal(m.mock.callCount(), 0);
  } finally {
    auth.close();
  }
});

test('no credentials: 401; the API root is challenged without a scope', async () => {
  const auth = await ClientAuth.open(config({ htpasswd: undefined }));
  try {
    const d = refused(await auth.authorize(undefined, []), 401);
    assert.deepEqual(d.challenges, ['Bearer realm="http://127.0.0.1:1/token",service="facade"']);
    assert.equal(d.detail, undefined);
    // Basic is not configured: Basic credentials are refused and only Bearer is offered.
    const b = refused(await auth.authorize(basic('alice', 'wonderland'), need), 401);
    assert.equal(b.challenges.length, 1);
    assert.match(b.message, /Bearer credentials are accepted here/);
  } finally {
    auth.close();
  }
});

test('Bearer: the granted repository passes; a token lacking the scope is 401 insufficient_scope naming what it lacks', async () => {
  const auth = await ClientAuth.open(config());
  try {
    assert.deepEqual(
      await auth.authorize(`Bearer ${await token({ sub: 'u', ...pull('remote/ws1') })}`, need),
      {
        ok: true,
        user: 'u',
      },
    );
    // Any valid token opens the API root.
    assert.equal((await auth.authorize(`Bearer ${await token({ access: [] })}`, [])).ok, true);
    // As docker distribution answers: 401 with the missing scope, which clients ask the realm for.
    const d = refused(await auth.authorize(`Bearer ${await token(pull('remote/ws2'))}`, need), 401);
    assert.equal(d.code, 'UNAUTHORIZED');
    assert.equal(
      d.challenges[0],
      'Bearer realm="http://127.0.0.1:1/token",service="facade",scope="repository:remote/ws1:pull",error="insufficient_scope"',
    );
    assert.match(d.message, /does not grant pull on repository remote\/ws1/);
    assert.deepEqual(d.detail, [{ Type: 'repository', Name: 'remote/ws1', Action: 'pull' }]);
    // Push is not pull.
    const push = { access: [{ type: 'repository', name: 'remote/ws1', actions: ['push'] }] };
    refused(await auth.authorize(`Bearer ${await token(push)}`, need), 401);
    // A request needing several actions (a mount) is challenged with all of them, as docker-registry does
    // (the message names those the token lacks)…
    const mount = [
      { repository: 'team/a', action: 'pull' as const },
      { repository: 'team/a', action: 'push' as const },
      { repository: 'team/b', action: 'pull' as const },
    ];
    const onlyA = { access: [{ type: 'repository', name: 'team/a', actions: ['pull', 'push'] }] };
    const m = refused(await auth.authorize(`Bearer ${await token(onlyA)}`, mount), 401);
    assert.match(
      m.challenges[0]!,
      /,scope="repository:team\/a:pull,push repository:team\/b:pull",error="insufficient_scope"$/,
    );
    assert.equal(m.message, 'the token does not grant pull on repository team/b');
    assert.equal((m.detail as unknown[]).length, 3);
    // …and so without credentials, one scope per repository as the token specification has it.
    const anon = refused(await auth.authorize(undefined, mount), 401);
    assert.match(anon.challenges[0]!, /,scope="repository:team\/a:pull,push repository:team\/b:pull"$/);
  } finally {
    auth.close();
  }
});

test('Bearer: expired, wrong issuer, wrong audience, other key, HS256 and garbage are 401 invalid_token', async () => {
  const auth = await ClientAuth.open(config());
  try {
    const now = Math.floor(Date.now() / 1000);
    const expired = refused(
      await auth.authorize(`Bearer ${await token(pull('remote/ws1'), { exp: now - 120 })}`, need),
      401,
    );
    assert.match(expired.message, /expired/);
    assert.match(expired.challenges[0]!, /error="invalid_token"/);
    for (const t of [
      await token(pull('remote/ws1'), { iss: 'someone else' }),
      await token(pull('remote/ws1'), { aud: 'another service' }),
      await token(pull('remote/ws1'), { key: other.privateKey }),
      await new SignJWT(pull('remote/ws1'))
        .setProtectedHeader({ alg: 'HS256' })
        .setIssuer('issuer')
        .setAudience('facade')
        .setExpirationTime('5m')
        .sign(new TextEncoder().encode('a shared secret that is long enough')),
      'not.a.jwt',
    ]) {
      refused(await auth.authorize(`Bearer ${t}`, need), 401);
    }
  } finally {
    auth.close();
  }
});

test('a PEM bundle of keys of different types (RSA then EC, as in a rotation) verifies with the key that fits', async () => {
  const rsa = generateKeyPairSync('rsa', { modulusLength: 2048 });
  const p384 = generateKeyPairSync('ec', { namedCurve: 'P-384' });
  const bundle = join(dir, 'bundle.pem');
  await writeFile(
    bundle,
    [rsa.publicKey, p384.publicKey, ec.publicKey]
      .map((k) => k.export({ type: 'spki', format: 'pem' }))
      .join(''),
  );
  const auth = await ClientAuth.open(config({ token: { ...config().token!, keys: bundle } }));
  try {
    assert.deepEqual(
      await auth.authorize(`Bearer ${await token({ sub: 'u', ...pull('remote/ws1') })}`, need),
      {
        ok: true,
        user: 'u',
      },
    );
    // A key that fits none is still refused.
    refused(
      await auth.authorize(`Bearer ${await token(pull('remote/ws1'), { key: other.privateKey })}`, need),
      401,
    );
  } finally {
    auth.close();
  }
});

test('a PEM bundle with a key tokens cannot use (Ed448, RSA under 2048 bits) still verifies with the keys after it', async () => {
  const ed448 = generateKeyPairSync('ed448');
  const ed25519 = generateKeyPairSync('ed25519');
  const rsa1024 = generateKeyPairSync('rsa', { modulusLength: 1024 });
  const rsa2048 = generateKeyPairSync('rsa', { modulusLength: 2048 });
  const bundle = join(dir, 'unusable-first.pem');
  await writeFile(
    bundle,
    [ed448, rsa1024, ed25519, rsa2048]
      .map((k) => k.publicKey.export({ type: 'spki', format: 'pem' }))
      .join(''),
  );
  const auth = await ClientAuth.open(config({ token: { ...config().token!, keys: bundle } }));
  try {
    for (const [alg, key] of [
      ['EdDSA', ed25519.privateKey],
      ['RS256', rsa2048.privateKey],
    ] as const) {
      const t = await new SignJWT(pull('remote/ws1'))
        .setProtectedHeader({ alg })
        .setIssuer('issuer')
        .setAudience('facade')
        .setExpirationTime('5m')
        .sign(key);
      assert.equal((await auth.authorize(`Bearer ${t}`, need)).ok, true, alg);
    }
  } finally {
    auth.close();
  }
  // A file of such keys only would refuse every token: it is refused at start.
  const unusable = join(dir, 'unusable.pem');
  await writeFile(unusable, ed448.publicKey.export({ type: 'spki', format: 'pem' }));
  await assert.rejects(
    ClientAuth.open(config({ token: { ...config().token!, keys: unusable } })),
    /no key .* can verify/,
  );
});

test('a JWKS of several keys without key ids (a rotation) verifies with whichever key signed', async () => {
  const jwks = join(dir, 'two-keys.json');
  const jwk = (k: typeof ec.publicKey) => k.export({ format: 'jwk' });
  await writeFile(jwks, JSON.stringify({ keys: [jwk(other.publicKey), jwk(ec.publicKey)] }));
  const auth = await ClientAuth.open(config({ token: { ...config().token!, keys: jwks } }));
  try {
    assert.equal((await auth.authorize(`Bearer ${await token(pull('remote/ws1'))}`, need)).ok, true);
    assert.equal(
      (await auth.authorize(`Bearer ${await token(pull('remote/ws1'), { key: other.privateKey })}`, need)).ok,
      true,
    );
    const stranger = generateKeyPairSync('ec', { namedCurve: 'P-256' });
    refused(
      await auth.authorize(`Bearer ${await token(pull('remote/ws1'), { key: stranger.privateKey })}`, need),
      401,
    );
  } finally {
    auth.close();
  }
});

test('a JWKS file works as the key source; a bad key file is refused at start', async () => {
  const jwks = join(dir, 'jwks.json');
  await writeFile(
    jwks,
    JSON.stringify({ keys: [{ ...ec.publicKey.export({ format: 'jwk' }), alg: 'ES256' }] }),
  );
  const auth = await ClientAuth.open(config({ token: { ...config().token!, keys: jwks } }));
  try {
    assert.equal((await auth.authorize(`Bearer ${await token(pull('remote/ws1'))}`, need)).ok, true);
  } finally {
    auth.close();
  }
  const bad = join(dir, 'bad.pem');
  await writeFile(bad, ec.privateKey.export({ type: 'pkcs8', format: 'pem' }));
  await assert.rejects(ClientAuth.open(config({ token: { ...config().token!, keys: bad } })), /private key/);
});

test('an htpasswd edit applies on reload; a bad edit keeps the old users', async () => {
  const file = join(dir, 'htpasswd-reload');
  await writeFile(file, `alice:${bcrypt.hashSync('one', 4)}\n`);
  const errors: string[] = [];
  const auth = await ClientAuth.open(config({ htpasswd: file }), {
    onReloadError: (what, err) => errors.push(`${what}: ${String(err)}`),
  });
  try {
    assert.equal((await auth.authorize(basic('alice', 'one'), need)).ok, true);
    await writeFile(file, `alice:${bcrypt.hashSync('two', 4)}\n`);
    await new Promise((r) => setTimeout(r, 150));
    await auth.reload();
    // The cached success was for the old hash: it no longer counts.
    assert.equal((await auth.authorize(basic('alice', 'one'), need)).ok, false);
    assert.equal((await auth.authorize(basic('alice', 'two'), need)).ok, true);
    await writeFile(file, 'alice:$apr1$x$y\n');
    await new Promise((r) => setTimeout(r, 150));
    await auth.reload();
    assert.equal(errors.length, 1);
    assert.match(errors[0]!, /htpasswd: .*only bcrypt/);
    assert.equal((await auth.authorize(basic('alice', 'two'), need)).ok, true);
  } finally {
    auth.close();
  }
});

test("the serving process's own user: its password only, pushes too, and an htpasswd entry of its name is not used", async () => {
  await writeFile(
    join(dir, 'htpasswd-svc'),
    `svc:${bcrypt.hashSync('from-file', 4)}\nalice:${bcrypt.hashSync('wonderland', 4)}\n`,
  );
  const auth = await ClientAuth.open(
    config({
      htpasswd: join(dir, 'htpasswd-svc'),
      token: undefined,
      serviceUser: { username: 'svc', password: 'generated-secret' },
    }),
    { watch: false },
  );
  try {
    const push = [{ repository: 'base-images', action: 'push' as const }];
    assert.deepEqual(await auth.authorize(basic('svc', 'generated-secret'), push), { ok: true, user: 'svc' });
    refused(await auth.authorize(basic('svc', 'from-file'), push), 401);
    refused(await auth.authorize(basic('svc', 'generated-secreT'), push), 401);
    assert.equal((await auth.authorize(basic('alice', 'wonderland'), push)).ok, true);
  } finally {
    auth.close();
  }
});

test('a JWKS no key of which can verify a token is refused at start, naming each key and what is wrong', async () => {
  const jwk = (k: typeof ec.publicKey) => k.export({ format: 'jwk' });
  const rsa1024 = generateKeyPairSync('rsa', { modulusLength: 1024 });
  const ed448 = generateKeyPairSync('ed448');
  const open = async (keys: unknown[]) => {
    const file = join(dir, 'checked.json');
    await writeFile(file, JSON.stringify({ keys }));
    return ClientAuth.open(config({ token: { ...config().token!, keys: file } }), { watch: false });
  };
  // Keys jose would never pick for an accepted algorithm: the set would refuse every token.
  for (const [keys, why] of [
    [[{ kty: 'oct', k: 'c2VjcmV0', kid: 'hs' }], /key 1 \(kid "hs"\): a shared secret/],
    [[jwk(rsa1024.publicKey)], /key 1: RSA of 1024 bits/],
    [[jwk(ed448.publicKey)], /key 1: curve "Ed448"/],
    [[{ ...jwk(ec.publicKey), use: 'enc' }], /key 1: use "enc"/],
    [[{ ...jwk(ec.publicKey), alg: 'ES384' }], /key 1: alg "ES384" does not fit/],
    [[{ kty: 'XYZ' }, jwk(rsa1024.publicKey)], /key 1: kty "XYZ"; key 2: RSA of 1024 bits/],
  ] as const) {
    await assert.rejects(open([...keys]), (err: Error) => {
      assert.match(err.message, /no key here can verify tokens/);
      assert.match(err.message, why);
      return true;
    });
  }
  // A key jose picks but cannot import, and a private key, are refused as a bad PEM block is.
  const { y: _y, ...noY } = jwk(ec.publicKey);
  await assert.rejects(open([jwk(ec.publicKey), noY]), /key 2: EC key without y/);
  await assert.rejects(open([{ ...jwk(ec.publicKey), x: 'AAAA' }]), /key 1: Invalid JWK EC key/);
  await assert.rejects(open([ec.privateKey.export({ format: 'jwk' })]), /key 1 is a private key/);
  // One usable key is enough: the others are never picked for a token they cannot verify.
  const auth = await open([jwk(rsa1024.publicKey), { kty: 'oct', k: 'c2VjcmV0' }, jwk(ec.publicKey)]);
  try {
    assert.equal((await auth.authorize(`Bearer ${await token(pull('remote/ws1'))}`, need)).ok, true);
  } finally {
    auth.close();
  }
});

test('a JWKS edited to one with no usable key is not loaded: the old keys stay and the reason is reported', async () => {
  const file = join(dir, 'jwks-reload.json');
  await writeFile(file, JSON.stringify({ keys: [ec.publicKey.export({ format: 'jwk' })] }));
  const errors: string[] = [];
  const auth = await ClientAuth.open(config({ token: { ...config().token!, keys: file } }), {
    watch: false,
    onReloadError: (what, err) => errors.push(`${what}: ${String(err)}`),
  });
  try {
    await writeFile(
      file,
      JSON.stringify({ keys: [{ ...ec.publicKey.export({ format: 'jwk' }), use: 'enc' }] }),
    );
    await auth.reload();
    assert.equal(errors.length, 1);
    assert.match(errors[0]!, /token-keys: .*no key here can verify tokens \(key 1: use "enc"/);
    assert.equal((await auth.authorize(`Bearer ${await token(pull('remote/ws1'))}`, need)).ok, true);
  } finally {
    auth.close();
  }
});
