import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import fc from 'fast-check';
import { isInvalidArgument } from '../errors.ts';
import type { Descriptor, Platform } from './descriptor.ts';
import type { Digest } from './digest.ts';
import {
  bestPlatformMatch,
  defaultPlatform,
  formatPlatform,
  hostPlatform,
  normalizePlatform,
  parsePlatform,
  platformMatches,
} from './platform.ts';

const P = (os: string, architecture: string, variant?: string): Platform =>
  variant === undefined ? { os, architecture } : { os, architecture, variant };

describe('parsePlatform', () => {
  const cases: [string, Platform][] = [
    ['linux/amd64', P('linux', 'amd64')],
    ['linux/x86_64', P('linux', 'amd64')],
    ['linux/x86-64', P('linux', 'amd64')],
    ['Linux/AMD64', P('linux', 'amd64')],
    ['linux/amd64/v1', P('linux', 'amd64')],
    ['linux/amd64/v3', P('linux', 'amd64', 'v3')],
    ['linux/aarch64', P('linux', 'arm64')],
    ['linux/arm64/v8', P('linux', 'arm64')],
    ['linux/arm64/8', P('linux', 'arm64')],
    ['linux/aarch64/V8', P('linux', 'arm64')],
    ['linux/arm64/v8.2', P('linux', 'arm64', 'v8.2')],
    ['linux/arm64/9', P('linux', 'arm64', 'v9')],
    ['linux/arm', P('linux', 'arm', 'v7')],
    ['linux/arm/7', P('linux', 'arm', 'v7')],
    ['linux/arm/6', P('linux', 'arm', 'v6')],
    ['linux/arm/v5', P('linux', 'arm', 'v5')],
    ['linux/arm/8', P('linux', 'arm', 'v8')],
    ['linux/armhf', P('linux', 'arm', 'v7')],
    ['linux/armel', P('linux', 'arm', 'v6')],
    ['linux/i386', P('linux', '386')],
    ['linux/i686', P('linux', '386')],
    ['linux/386', P('linux', '386')],
    ['linux/ppc64le', P('linux', 'ppc64le')],
    ['linux/riscv64', P('linux', 'riscv64')],
    ['linux/s390x', P('linux', 's390x')],
    ['macos/arm64', P('darwin', 'arm64')],
    ['windows/amd64', P('windows', 'amd64')],
    ['windows(10.0.17763)/amd64', { os: 'windows', 'os.version': '10.0.17763', architecture: 'amd64' }],
    ['windows()/amd64', P('windows', 'amd64')],
    // A lone architecture means linux.
    ['amd64', P('linux', 'amd64')],
    ['aarch64', P('linux', 'arm64')],
    ['armhf', P('linux', 'arm', 'v7')],
    ['s390x', P('linux', 's390x')],
  ];
  for (const [input, want] of cases) {
    test(input, () => assert.deepEqual(parsePlatform(input), want));
  }

  test('a lone OS means the host architecture', () => {
    assert.deepEqual(parsePlatform('linux'), hostPlatform());
    const win = parsePlatform('windows');
    assert.equal(win.os, 'windows');
    assert.equal(win.architecture, hostPlatform().architecture);
  });

  const bad: [string, RegExp][] = [
    ['', /empty/],
    ['/', /invalid OS component/],
    ['/amd64', /invalid OS component/],
    ['linux/', /invalid component/],
    ['linux//v7', /invalid component/],
    ['linux/amd64/', /invalid component/],
    ['linux/amd64/v8/x', /want os\/arch/],
    ['linux/amd 64', /invalid component/],
    ['linux/*', /invalid component/],
    ['*', /invalid OS component/],
    ['linux(1.0/amd64', /invalid OS component/],
    ['linux(1 0)/amd64', /invalid OS component/],
    ['linux/../amd64', /invalid component/],
    ['linux/amd64/.v8', /invalid component/],
    ['plan10', /unknown operating system or architecture/],
    ['amd64(1.0)', /unknown operating system or architecture/],
    ['linux\n/amd64', /invalid OS component/],
  ];
  for (const [input, reason] of bad) {
    test(`rejects ${JSON.stringify(input)}`, () => {
      assert.throws(
        () => parsePlatform(input),
        (err: unknown) => isInvalidArgument(err) && reason.test((err as Error).message),
      );
    });
  }
});

describe('normalizePlatform and formatPlatform', () => {
  test('keeps other fields and drops empty ones', () => {
    assert.deepEqual(
      normalizePlatform({ os: 'Linux', architecture: 'x86_64', variant: '', features: ['sse4'] }),
      { os: 'linux', architecture: 'amd64', features: ['sse4'] },
    );
    assert.deepEqual(normalizePlatform({ os: 'windows', architecture: 'amd64', 'os.version': '' }), {
      os: 'windows',
      architecture: 'amd64',
    });
  });
  test('does not modify its argument', () => {
    const p = P('linux', 'aarch64', 'v8');
    normalizePlatform(p);
    assert.deepEqual(p, P('linux', 'aarch64', 'v8'));
  });
  test('formats', () => {
    assert.equal(formatPlatform(P('linux', 'amd64')), 'linux/amd64');
    assert.equal(formatPlatform(P('linux', 'arm', 'v7')), 'linux/arm/v7');
    assert.equal(
      formatPlatform({ os: 'windows', architecture: 'amd64', 'os.version': '10.0.20348.1' }),
      'windows(10.0.20348.1)/amd64',
    );
    assert.equal(formatPlatform(P('', 'amd64')), 'unknown');
  });

  const osArb = fc.constantFrom('linux', 'Linux', 'windows', 'darwin', 'macos', 'freebsd');
  const archArb = fc.constantFrom(
    'amd64',
    'x86_64',
    'x86-64',
    'AMD64',
    'aarch64',
    'arm64',
    'arm',
    'armhf',
    'armel',
    'i386',
    'i686',
    '386',
    'riscv64',
    'ppc64le',
    's390x',
  );
  const variantArb = fc.option(
    fc.constantFrom('', 'v1', 'v2', 'v3', '5', '6', '7', '8', 'v8', 'v8.1', 'v9'),
    {
      nil: undefined,
    },
  );
  const platformArb = fc.tuple(osArb, archArb, variantArb).map(([os, arch, variant]) => P(os, arch, variant));

  test('normalising is idempotent, and parse reads back what format writes', () => {
    fc.assert(
      fc.property(platformArb, (p) => {
        const n = normalizePlatform(p);
        assert.deepEqual(normalizePlatform(n), n);
        assert.deepEqual(parsePlatform(formatPlatform(n)), n);
        assert.ok(platformMatches(p, p));
        assert.ok(platformMatches(n, p));
      }),
    );
  });
});

describe('platformMatches', () => {
  const cases: [string, string, boolean][] = [
    ['linux/amd64', 'linux/amd64', true],
    ['linux/amd64', 'linux/x86_64', true],
    ['linux/amd64', 'linux/amd64/v1', true],
    ['linux/amd64', 'linux/386', true],
    ['linux/amd64', 'linux/amd64/v2', false],
    ['linux/amd64', 'linux/arm64', false],
    ['linux/amd64', 'windows/amd64', false],
    ['linux/amd64/v3', 'linux/amd64/v2', true],
    ['linux/amd64/v3', 'linux/amd64', true],
    ['linux/amd64/v3', 'linux/386', true],
    ['linux/amd64/v3', 'linux/amd64/v4', false],
    ['linux/386', 'linux/amd64', false],
    ['linux/arm64', 'linux/aarch64', true],
    ['linux/arm64', 'linux/arm64/v8', true],
    ['linux/arm64', 'linux/arm/v8', true],
    ['linux/arm64', 'linux/arm/v7', true],
    ['linux/arm64', 'linux/arm', true],
    ['linux/arm64', 'linux/arm/v5', true],
    ['linux/arm64', 'linux/arm64/v8.1', false],
    ['linux/arm64', 'linux/arm64/v9', false],
    ['linux/arm64', 'linux/amd64', false],
    ['linux/arm64/v8.2', 'linux/arm64/v8.1', true],
    ['linux/arm64/v8.2', 'linux/arm64', true],
    ['linux/arm64/v8.2', 'linux/arm/v7', true],
    ['linux/arm64/v8.2', 'linux/arm64/v8.3', false],
    ['linux/arm64/v9', 'linux/arm64/v8.5', true],
    ['linux/arm64/v9', 'linux/arm64/v8.4', true],
    ['linux/arm64/v9', 'linux/arm64', true],
    ['linux/arm64/v9', 'linux/arm/v7', true],
    ['linux/arm64/v9', 'linux/arm64/v8.6', false],
    ['linux/arm64/v9', 'linux/arm64/v9.1', false],
    ['linux/arm64/v9.2', 'linux/arm64/v9.1', true],
    ['linux/arm64/v9.2', 'linux/arm64/v8.7', true],
    ['linux/arm64/v9.2', 'linux/arm64/v8.8', false],
    ['linux/arm64/foo', 'linux/arm64/foo', true],
    ['linux/arm64/foo', 'linux/arm64', false],
    ['linux/arm/v7', 'linux/arm', true],
    ['linux/arm/v7', 'linux/arm/v6', true],
    ['linux/arm/v7', 'linux/arm/v5', true],
    ['linux/arm/v7', 'linux/arm/v8', false],
    ['linux/arm/v7', 'linux/arm64', false],
    ['linux/arm/v6', 'linux/arm', false],
    ['linux/arm/v6', 'linux/armel', true],
    ['linux/arm/v5', 'linux/arm/v6', false],
    ['linux/arm/v8', 'linux/arm/v7', true],
    ['linux/riscv64', 'linux/riscv64', true],
    ['linux/riscv64', 'linux/amd64', false],
    ['windows(10.0.17763.100)/amd64', 'windows(10.0.17763.5576)/amd64', true],
    ['windows(10.0.17763.100)/amd64', 'windows/amd64', true],
    ['windows(10.0.17763.100)/amd64', 'windows(10.0.20348.1)/amd64', false],
    ['windows/amd64', 'windows(10.0.20348.1)/amd64', true],
    ['linux(1)/amd64', 'linux(2)/amd64', true],
  ];
  for (const [want, have, ok] of cases) {
    test(`${want} ${ok ? 'runs' : 'does not run'} ${have}`, () => {
      assert.equal(platformMatches(parsePlatform(want), parsePlatform(have)), ok);
    });
  }
  test('unnormalised input is normalised first', () => {
    assert.ok(platformMatches(P('Linux', 'x86_64'), P('linux', 'AMD64', 'v1')));
    assert.ok(platformMatches(P('linux', 'aarch64', 'v8'), P('linux', 'armhf')));
  });
});

describe('bestPlatformMatch', () => {
  let n = 0;
  const d = (platform?: string): Descriptor => {
    n++;
    const desc: Descriptor = {
      mediaType: 'application/vnd.oci.image.manifest.v1+json',
      digest: `sha256:${n.toString(16).padStart(64, '0')}` as Digest,
      size: n,
    };
    if (platform !== undefined) desc.platform = parsePlatform(platform);
    return desc;
  };
  const amd64 = d('linux/amd64');
  const arm64 = d('linux/arm64/v8');
  const armv7 = d('linux/arm/v7');
  const armv6 = d('linux/arm/v6');
  const i386 = d('linux/386');
  const s390x = d('linux/s390x');
  const noPlatform = d();
  const attestation: Descriptor = { ...d(), platform: { os: 'unknown', architecture: 'unknown' } };
  const index = [noPlatform, attestation, i386, armv6, armv7, arm64, amd64, s390x];

  const cases: [string, Descriptor[], Descriptor | undefined][] = [
    ['linux/amd64', index, amd64],
    ['linux/x86_64', index, amd64],
    ['linux/arm64', index, arm64],
    ['linux/arm/v7', index, armv7],
    ['linux/arm/v6', index, armv6],
    ['linux/arm/v8', index, armv7],
    ['linux/386', index, i386],
    ['linux/s390x', index, s390x],
    ['linux/riscv64', index, undefined],
    ['windows/amd64', index, undefined],
    ['linux/arm64', [armv6, armv7], armv7],
    ['linux/arm64', [armv6, amd64], armv6],
    ['linux/amd64', [i386, amd64], amd64],
    ['linux/amd64', [i386, arm64], i386],
    ['linux/amd64', [noPlatform], undefined],
    ['linux/amd64', [], undefined],
  ];
  for (const [want, candidates, expected] of cases) {
    test(`${want} from ${candidates.map((c) => (c.platform ? formatPlatform(c.platform) : '-')).join(',')}`, () => {
      assert.equal(bestPlatformMatch(parsePlatform(want), candidates), expected);
    });
  }

  test('the first listed wins a tie', () => {
    const a = d('linux/amd64');
    const b = d('linux/x86_64');
    assert.equal(bestPlatformMatch(parsePlatform('linux/amd64'), [a, b]), a);
    assert.equal(bestPlatformMatch(parsePlatform('linux/amd64'), [b, a]), b);
  });

  test('newer compatible variants win over older ones', () => {
    const v1 = d('linux/amd64');
    const v2 = d('linux/amd64/v2');
    const v3 = d('linux/amd64/v3');
    assert.equal(bestPlatformMatch(parsePlatform('linux/amd64/v3'), [v1, v2, v3]), v3);
    assert.equal(bestPlatformMatch(parsePlatform('linux/amd64/v3'), [v1, v2]), v2);
    assert.equal(bestPlatformMatch(parsePlatform('linux/amd64/v2'), [v3, v1]), v1);
    const a81 = d('linux/arm64/v8.1');
    const a85 = d('linux/arm64/v8.5');
    assert.equal(bestPlatformMatch(parsePlatform('linux/arm64/v9'), [arm64, a81, a85]), a85);
  });

  test('works on any shape with an optional platform', () => {
    const rows = [{ name: 'x', platform: P('linux', 'arm64') }, { name: 'y' }];
    assert.equal(bestPlatformMatch(P('linux', 'aarch64'), rows)?.name, 'x');
  });
});

describe('hostPlatform', () => {
  test('is linux, normalised, and runs itself', () => {
    const h = hostPlatform();
    assert.equal(h.os, 'linux');
    assert.deepEqual(normalizePlatform(h), h);
    assert.ok(platformMatches(h, h));
    assert.deepEqual(defaultPlatform(), h);
  });
  test('maps the Node architecture name', () => {
    const want: Record<string, string> = { x64: 'amd64', arm64: 'arm64', ia32: '386', arm: 'arm' };
    assert.equal(hostPlatform().architecture, want[process.arch] ?? hostPlatform().architecture);
  });
});
