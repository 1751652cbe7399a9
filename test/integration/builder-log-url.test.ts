// Where a build's LogInfo sends clients to read its logs: the builder's own gRPC address, with the port
// it listens on, also when the configuration asked for any free port (`listen: 127.0.0.1:0`, as strata
// up's tests and anyone wanting no fixed port do).
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import { pino } from 'pino';
import { ImageBuilder } from '../../src/api/gen/builder/imgbuilder_pb.ts';
import { callUnary, createClient } from '../../src/api/grpc/client.ts';
import { builderConfigFrom, startBuilder } from '../../src/server/builder.ts';
import { dockerfileRepo, dockerfileRequest, GatedEngine } from '../helpers/builder-engine.ts';
import { startRegistry, type TestRegistry } from '../helpers/registry.ts';
import { removeTempDir, tempDir } from '../helpers/tmp.ts';

let dir: string;
let reg: TestRegistry;

before(async () => {
  dir = await tempDir('builder-log-url');
  reg = await startRegistry();
});
after(async () => {
  await reg?.stop();
  await removeTempDir(dir);
});

test('a build names the port the builder listens on in its log URL', async () => {
  const { busybox, repo } = await dockerfileRepo(reg, dir, ['a']);
  const engine = new GatedEngine(busybox);
  const b = await startBuilder(
    builderConfigFrom(
      {
        listen: '127.0.0.1:0',
        baseRepository: `${reg.host}/base`,
        workspaceRepository: `${reg.host}/ws`,
        stateDir: join(dir, 'state'),
        plainHttpHosts: [reg.host],
        allowFileRemotes: true,
      },
      dir,
    ),
    pino({ level: 'silent' }),
    { engine },
  );
  const client = createClient(`127.0.0.1:${b.port}`);
  try {
    const updates = b.builder.build(dockerfileRequest(repo.url, 'a'));
    await updates.next();
    await engine.started(1);
    const { builds } = await callUnary(client, ImageBuilder.method.listBuilds, {});
    assert.equal(builds.length, 1);
    assert.equal(builds[0]?.logInfo?.url, `grpc://127.0.0.1:${b.port}`);
    engine.release();
    for await (const _ of updates);
  } finally {
    engine.release();
    client.close();
    await b.close();
  }
});
