// Client authentication on hosted repositories: with Bearer tokens, pushing needs the `push` action on
// the repository and deleting the `delete` action; a user whose tokens grant only `pull` can pull what
// another pushed but neither push nor delete. A token for one repository reaches only that repository's
// blobs, and a cross-repository mount also needs pull on the source.
import assert from 'node:assert/strict';
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { test } from 'node:test';
import bcrypt from 'bcryptjs';
import { pino } from 'pino';
import { Registry } from 'prom-client';
import { digestOf } from '../../src/oci/digest.ts';
import { type FacadeApp, startFacade } from '../../src/server/facade.ts';
import { facadeConfigFrom } from '../../src/server/facade-config.ts';
import { raw } from '../helpers/hosted.ts';
import { pushBusybox, skopeoCopy, skopeoRawManifest } from '../helpers/images.ts';
import { startRegistry } from '../helpers/registry.ts';
import { removeTempDir, tempDir } from '../helpers/tmp.ts';
import { startTokenServer, type TokenServer } from '../helpers/token-server.ts';

/** A facade with hosted repositories under `work` that takes the token server's Bearer tokens. */
function startTokenFacade(work: string, tokens: TokenServer): Promise<FacadeApp> {
  const token = {
    realm: tokens.realm,
    service: tokens.service,
    issuer: tokens.issuer,
    keys: tokens.certFile,
  };
  return startAuthFacade(work, { token });
}

function startAuthFacade(work: string, auth: Record<string, unknown>): Promise<FacadeApp> {
  const config = {
    listen: '127.0.0.1:0',
    hosted: { root: join(work, 'root') },
    cache: { dir: join(work, 'cache') },
    auth,
  };
  return startFacade(facadeConfigFrom(config, work), {
    logger: pino({ level: 'silent' }),
    registry: new Registry(),
  });
}

test('hosted repositories: pushes and deletes need their actions in the token', async (t) => {
  const work = await tempDir('hosted-auth');
  t.after(() => removeTempDir(work));
  const tokens = await startTokenServer({
    users: { alice: 'wonderland', bob: 'builder' },
    dir: work,
    service: 'strata-hosted-test',
    policy: (user, scope) =>
      user === 'alice' ? scope.actions : user === 'bob' ? scope.actions.filter((a) => a === 'pull') : [],
  });
  t.after(() => tokens.stop());
  const app = await startTokenFacade(work, tokens);
  t.after(() => app.close());
  const host = new URL(app.url).host;
  const reg = await startRegistry({ t });
  const source = await pushBusybox(reg, 'src/busybox');
  const alice = { username: 'alice', password: 'wonderland' };
  const bob = { username: 'bob', password: 'builder' };

  const pushed = await skopeoCopy(source.ref, `${host}/team/app:v1`, { destCreds: alice });
  assert.equal(pushed, source.digest);
  // bob may pull it…
  const bytes = await skopeoRawManifest(`${host}/team/app:v1`, { creds: bob });
  assert.ok(bytes.length > 0);
  // …but not push.
  await assert.rejects(
    skopeoCopy(source.ref, `${host}/team/app:bob`, { destCreds: bob }),
    /denied|unauthorized|403/i,
  );

  // Without credentials an upload is challenged with the pull and push scope (as docker-registry asks both).
  const anon = await raw(app.url, 'POST', '/v2/team/app/blobs/uploads/');
  assert.equal(anon.status, 401);
  assert.match(anon.headers.get('www-authenticate') ?? '', /scope="repository:team\/app:pull,push"/);
  // A name that is no repository's is refused as such before any challenge, which would carry it.
  for (const name of ['%E2%82%AC', 'Team/App']) {
    const bad = await raw(app.url, 'GET', `/v2/${name}/manifests/latest`);
    assert.equal(bad.status, 400, name);
    assert.equal(bad.code, 'NAME_INVALID', name);
  }
  // A token granting only pull cannot delete.
  const pullToken = tokens.issue('bob', ['repository:team/app:pull,delete']).token;
  const del = await raw(app.url, 'DELETE', `/v2/team/app/manifests/${source.digest}`, {
    headers: { authorization: `Bearer ${pullToken}` },
  });
  assert.equal(del.status, 401);
  assert.equal(del.code, 'UNAUTHORIZED');
  assert.match(
    del.headers.get('www-authenticate') ?? '',
    /scope="repository:team\/app:delete",error="insufficient_scope"/,
  );
  const aliceToken = tokens.issue('alice', ['repository:team/app:pull,delete']).token;
  const ok = await raw(app.url, 'DELETE', `/v2/team/app/manifests/${source.digest}`, {
    headers: { authorization: `Bearer ${aliceToken}` },
  });
  assert.equal(ok.status, 202);
});

test('hosted repositories: a token for one repository reaches only its blobs; a mount needs pull on the source', async (t) => {
  const work = await tempDir('hosted-auth-members');
  t.after(() => removeTempDir(work));
  const tokens = await startTokenServer({ users: {}, dir: work, service: 'strata-hosted-test' });
  t.after(() => tokens.stop());
  const app = await startTokenFacade(work, tokens);
  t.after(() => app.close());
  const bearer = (...scopes: string[]) => ({
    authorization: `Bearer ${tokens.issue('alice', scopes).token}`,
  });

  const secret = Buffer.from('a layer pushed to team/b only');
  const d = digestOf(secret);
  const pushB = bearer('repository:team/b:pull,push');
  const start = await raw(app.url, 'POST', '/v2/team/b/blobs/uploads/', { headers: pushB });
  assert.equal(start.status, 202);
  const location = start.headers.get('location') ?? '';
  const put = await raw(app.url, 'PUT', `${location}${location.includes('?') ? '&' : '?'}digest=${d}`, {
    headers: { ...pushB, 'content-type': 'application/octet-stream' },
    body: secret,
  });
  assert.equal(put.status, 201);

  // A token for team/a reads nothing of team/b through team/a.
  const onlyA = bearer('repository:team/a:pull,push');
  for (const method of ['GET', 'HEAD']) {
    const via = await raw(app.url, method, `/v2/team/a/blobs/${d}`, { headers: onlyA });
    assert.equal(via.status, 404, method);
  }
  assert.equal((await raw(app.url, 'GET', `/v2/team/a/blobs/${d}`, { headers: onlyA })).code, 'BLOB_UNKNOWN');
  // Nor can it mount team/b's blob into team/a without pull on team/b.
  const mountPath = `/v2/team/a/blobs/uploads/?mount=${d}&from=team/b`;
  const refused = await raw(app.url, 'POST', mountPath, { headers: onlyA });
  assert.equal(refused.status, 401);
  assert.equal(refused.code, 'UNAUTHORIZED');
  // The challenge names every scope the request needs, the lacking one too, which a client can ask the
  // realm for.
  assert.match(
    refused.headers.get('www-authenticate') ?? '',
    /scope="repository:team\/a:pull,push repository:team\/b:pull",error="insufficient_scope"/,
  );
  assert.equal((await raw(app.url, 'GET', `/v2/team/a/blobs/${d}`, { headers: onlyA })).status, 404);
  // With pull on team/b the mount links the blob into team/a, which then serves it.
  const mounted = await raw(app.url, 'POST', mountPath, {
    headers: bearer('repository:team/a:pull,push', 'repository:team/b:pull'),
  });
  assert.equal(mounted.status, 201);
  const got = await raw(app.url, 'GET', `/v2/team/a/blobs/${d}`, { headers: onlyA });
  assert.equal(got.status, 200);
  assert.deepEqual(got.body, secret);
});

test('the catalog: a token needs registry:catalog:*, as docker-registry asks; any htpasswd user may list it', async (t) => {
  const work = await tempDir('hosted-auth-catalog');
  t.after(() => removeTempDir(work));
  // Strata and docker-registry take the same token server's tokens, so their answers compare as they are.
  const reg = await startRegistry({ t, auth: { mode: 'token', users: { alice: 'wonderland' } } });
  const tokens = reg.tokenServer!;
  const app = await startTokenFacade(work, tokens);
  t.after(() => app.close());
  const bearer = (scope: string) => ({ authorization: `Bearer ${tokens.issue('alice', [scope]).token}` });
  const answers = async (base: string) => {
    const out: string[] = [];
    for (const headers of [{}, bearer('repository:team/app:pull'), bearer('registry:catalog:*')]) {
      const a = await raw(base, 'GET', '/v2/_catalog', { headers });
      out.push(
        `${a.status} ${a.code ?? a.body.toString().trim()} ${a.headers.get('www-authenticate') ?? ''}`,
      );
    }
    return out;
  };
  const expected = await answers(reg.url);
  assert.match(expected[0]!, /^401 UNAUTHORIZED Bearer .*scope="registry:catalog:\*"$/);
  assert.match(expected[1]!, /^401 UNAUTHORIZED .*error="insufficient_scope"$/);
  assert.equal(expected[2], '200 {"repositories":[]} ');
  assert.deepEqual(await answers(app.url), expected);

  // htpasswd: every user it knows may pull every repository, and so list them, as with docker-registry.
  await writeFile(join(work, 'htpasswd'), `alice:${bcrypt.hashSync('wonderland', 6)}\n`);
  const basic = await startAuthFacade(join(work, 'basic'), {
    htpasswd: join(work, 'htpasswd'),
    basicRealm: 'strata test',
  });
  t.after(() => basic.close());
  const anon = await raw(basic.url, 'GET', '/v2/_catalog');
  assert.equal(anon.status, 401);
  assert.equal(anon.headers.get('www-authenticate'), 'Basic realm="strata test",charset="UTF-8"');
  const creds = { authorization: `Basic ${Buffer.from('alice:wonderland').toString('base64')}` };
  const listed = await raw(basic.url, 'GET', '/v2/_catalog', { headers: creds });
  assert.equal(listed.status, 200);
  assert.deepEqual(JSON.parse(listed.body.toString()), { repositories: [] });
});

test('token challenges: the same statuses and scopes as docker-registry with the same token server', async (t) => {
  const reg = await startRegistry({ t, auth: { mode: 'token', users: { alice: 'wonderland' } } });
  const tokens = reg.tokenServer!;
  const work = await tempDir('hosted-auth-diff');
  t.after(() => removeTempDir(work));
  const app = await startTokenFacade(work, tokens);
  t.after(() => app.close());
  const bearer = (...scopes: string[]): Record<string, string> => ({
    authorization: `Bearer ${tokens.issue('alice', scopes).token}`,
  });
  const blob = Buffer.from('a layer pushed to team/b only');
  const d = digestOf(blob);
  const answers = async (base: string) => {
    const pushB = bearer('repository:team/b:pull,push');
    const start = await raw(base, 'POST', '/v2/team/b/blobs/uploads/', { headers: pushB });
    const l = start.headers.get('location') ?? '';
    const put = await raw(base, 'PUT', `${l}${l.includes('?') ? '&' : '?'}digest=${d}`, {
      headers: { ...pushB, 'content-type': 'application/octet-stream' },
      body: blob,
    });
    assert.equal(put.status, 201, base);
    const onlyA = bearer('repository:team/a:pull,push');
    const mount = `/v2/team/a/blobs/uploads/?mount=${d}&from=team/b`;
    const out: string[] = [];
    for (const [name, method, path, headers] of [
      ['upload without a token', 'POST', '/v2/team/a/blobs/uploads/', {}],
      ['upload with pull only', 'POST', '/v2/team/a/blobs/uploads/', bearer('repository:team/a:pull')],
      ['upload with push only', 'POST', '/v2/team/a/blobs/uploads/', bearer('repository:team/a:push')],
      ['chunk with pull only', 'PATCH', '/v2/team/a/blobs/uploads/x', bearer('repository:team/a:pull')],
      ['mount without a token', 'POST', mount, {}],
      ['mount without pull on the source', 'POST', mount, onlyA],
      ['mount', 'POST', mount, bearer('repository:team/a:pull,push', 'repository:team/b:pull')],
      ['delete with pull only', 'DELETE', `/v2/team/b/blobs/${d}`, bearer('repository:team/b:pull')],
      ['pull with push only', 'GET', `/v2/team/b/blobs/${d}`, bearer('repository:team/b:push')],
    ] as const) {
      const a = await raw(base, method, path, { headers });
      // docker-registry keeps a request's scopes in Go maps: their order varies from one answer to the next.
      const challenge = (a.headers.get('www-authenticate') ?? '')
        .replace(/realm="[^"]*"/, 'realm="…"')
        .replace(/scope="([^"]*)"/, (_m, scope: string) => {
          const parts = scope.split(' ').map((p) => {
            const i = p.lastIndexOf(':');
            return `${p.slice(0, i)}:${p
              .slice(i + 1)
              .split(',')
              .sort()
              .join(',')}`;
          });
          return `scope="${parts.sort().join(' ')}"`;
        });
      out.push(`${name}: ${a.status} ${a.code ?? ''} ${challenge}`.trim());
    }
    return out;
  };
  const expected = await answers(reg.url);
  assert.ok(expected.some((l) => l.includes('insufficient_scope')));
  assert.deepEqual(await answers(app.url), expected);
});
