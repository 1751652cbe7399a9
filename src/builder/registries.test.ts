import assert from 'node:assert/strict';
import { test } from 'node:test';
import { pushBusybox } from '../../test/helpers/images.ts';
import { startRegistry } from '../../test/helpers/registry.ts';
import { parseNormalizedReference } from '../oci/reference.ts';
import { anonymous } from '../registry/credentials.ts';
import { RegistryAccess } from './registries.ts';
import { AuthPolicy } from './registry-auth.ts';

test('a client a build holds keeps working while requests with other credentials push it out of the cache', async () => {
  const reg = await startRegistry();
  const access = new RegistryAccess({ hosts: { insecure: [reg.host] }, installation: anonymous });
  try {
    const image = parseNormalizedReference((await pushBusybox(reg, 'library/busybox')).ref);
    const policy = (n: number) =>
      new AuthPolicy(
        {
          mode: { kind: 'none' },
          additional: { 'other.example': Buffer.from(`u${n}:p`).toString('base64') },
        },
        { base: `${reg.host}/base`, workspace: `${reg.host}/ws` },
        anonymous,
      );
    const held = access.forPolicy(policy(0));
    await held.resolve(image);
    // Many callers with credentials of their own, while the first one's build still copies.
    for (let n = 1; n <= 100; n++) access.forPolicy(policy(n));
    const again = await held.resolve(image);
    assert.match(again.digest, /^sha256:/);
  } finally {
    await access.close();
    await reg.stop();
  }
});
