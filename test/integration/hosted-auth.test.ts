// Client authentication on hosted repositories: with Bearer tokens, pushing needs the `push` action on
// the repository and deleting the `delete` action; a user whose tokens grant only `pull` can pull what
// another pushed but neither push nor delete.
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { test } from 'node:test';
import { pino } from 'pino';
import { Registry } from 'prom-client';
import { startFacade } from '../../src/server/facade.ts';
import { facadeConfigFrom } from '../../src/server/facade-config.ts';
import { raw } from '../helpers/hosted.ts';
import { pushBusybox, skopeoCopy, skopeoRawManifest } from '../helpers/images.ts';
import { startRegistry } from '../helpers/registry.ts';
import { removeTempDir, tempDir } from '../helpers/tmp.ts';
import { startTokenServer } from '../helpers/token-server.ts';

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
  const app = await startFacade(
    facadeConfigFrom(
      {
        listen: '127.0.0.1:0',
        hosted: { root: join(work, 'root') },
        cache: { dir: join(work, 'cache') },
        auth: {
          token: {
            realm: tokens.realm,
            service: tokens.service,
            issuer: tokens.issuer,
            keys: tokens.certFile,
          },
        },
      },
      work,
    ),
    { logger: pino({ level: 'silent' }), registry: new Registry() },
  );
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

  // Without credentials an upload is challenged with the push scope.
  const anon = await raw(app.url, 'POST', '/v2/team/app/blobs/uploads/');
  assert.equal(anon.status, 401);
  assert.match(anon.headers.get('www-authenticate') ?? '', /scope="repository:team\/app:push"/);
  // A token granting only pull cannot delete.
  const pullToken = tokens.issue('bob', ['repository:team/app:pull,delete']).token;
  const del = await raw(app.url, 'DELETE', `/v2/team/app/manifests/${source.digest}`, {
    headers: { authorization: `Bearer ${pullToken}` },
  });
  assert.equal(del.status, 403);
  assert.equal(del.code, 'DENIED');
  const aliceToken = tokens.issue('alice', ['repository:team/app:pull,delete']).token;
  const ok = await raw(app.url, 'DELETE', `/v2/team/app/manifests/${source.digest}`, {
    headers: { authorization: `Bearer ${aliceToken}` },
  });
  assert.equal(ok.status, 202);
});
