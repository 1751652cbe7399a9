import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import fc from 'fast-check';
import { isInvalidArgument } from '../errors.ts';
import type { Digest } from './digest.ts';
import {
  familiarString,
  formatReference,
  isValidDomain,
  isValidRepositoryPath,
  isValidTag,
  parseNormalizedReference,
  parseReference,
  type Reference,
  referenceTarget,
  repositoryName,
  withDefaultTag,
} from './reference.ts';

const SHA256 = `sha256:${'ab'.repeat(32)}` as Digest;
const SHA512 = `sha512:${'cd'.repeat(64)}` as Digest;

function rejects(s: string, reason: RegExp, parse = parseReference): void {
  assert.throws(
    () => parse(s),
    (err: unknown) => isInvalidArgument(err) && reason.test((err as Error).message),
    `${JSON.stringify(s)} should be rejected with ${reason}`,
  );
}

describe('parseReference accepts the distribution grammar', () => {
  const cases: [string, Reference][] = [
    ['ubuntu', { domain: '', path: 'ubuntu' }],
    ['ubuntu:22.04', { domain: '', path: 'ubuntu', tag: '22.04' }],
    ['foo/bar', { domain: '', path: 'foo/bar' }],
    ['foo/bar/baz:1', { domain: '', path: 'foo/bar/baz', tag: '1' }],
    ['localhost/foo', { domain: 'localhost', path: 'foo' }],
    ['localhost:5000/foo:v1', { domain: 'localhost:5000', path: 'foo', tag: 'v1' }],
    // No slash: `localhost:5000` is the repository `localhost` with tag `5000`, as in distribution.
    ['localhost:5000', { domain: '', path: 'localhost', tag: '5000' }],
    ['example.com/a/b', { domain: 'example.com', path: 'a/b' }],
    ['example.com:443/a', { domain: 'example.com:443', path: 'a' }],
    ['registry:5000/a', { domain: 'registry:5000', path: 'a' }],
    ['Registry/a', { domain: 'Registry', path: 'a' }],
    ['REG.example.COM/a', { domain: 'REG.example.COM', path: 'a' }],
    ['[::1]/a', { domain: '[::1]', path: 'a' }],
    ['[::1]:5000/a/b:t', { domain: '[::1]:5000', path: 'a/b', tag: 't' }],
    ['[2001:db8::1]:5000/a', { domain: '[2001:db8::1]:5000', path: 'a' }],
    ['127.0.0.1:5000/a', { domain: '127.0.0.1:5000', path: 'a' }],
    ['a-b.c/x', { domain: 'a-b.c', path: 'x' }],
    ['a.b_c', { domain: '', path: 'a.b_c' }],
    ['a__b', { domain: '', path: 'a__b' }],
    ['a---b', { domain: '', path: 'a---b' }],
    ['a-b_c__e/f.g', { domain: '', path: 'a-b_c__e/f.g' }],
    ['0/1', { domain: '', path: '0/1' }],
    ['foo:_', { domain: '', path: 'foo', tag: '_' }],
    ['foo:A.b-C_', { domain: '', path: 'foo', tag: 'A.b-C_' }],
    [`foo@${SHA256}`, { domain: '', path: 'foo', digest: SHA256 }],
    [`foo@${SHA512}`, { domain: '', path: 'foo', digest: SHA512 }],
    [`r.io/foo:1@${SHA256}`, { domain: 'r.io', path: 'foo', tag: '1', digest: SHA256 }],
  ];
  for (const [input, want] of cases) {
    test(input.length > 60 ? `${input.slice(0, 60)}…` : input, () => {
      assert.deepEqual(parseReference(input), want);
      assert.equal(formatReference(want), input);
    });
  }

  test('name of exactly 255 characters is accepted, 256 is not', () => {
    const n255 = `${'a'.repeat(127)}/${'b'.repeat(127)}`;
    assert.equal(n255.length, 255);
    assert.equal(parseReference(n255).path, n255);
    assert.equal(parseReference(`${n255}:tag`).tag, 'tag');
    rejects(`${n255}c`, /^repository name must not be more than 255 characters/);
    const d255 = `r.io/${'a'.repeat(250)}`;
    assert.equal(parseReference(d255).domain, 'r.io');
    rejects(`r.io/${'a'.repeat(251)}`, /^repository name must not be more than 255 characters/);
  });

  test('tag of exactly 128 characters is accepted, 129 is not', () => {
    const t128 = 'x'.repeat(128);
    assert.equal(parseReference(`foo:${t128}`).tag, t128);
    rejects(`foo:${t128}y`, /^invalid tag format: .*longer than 128/);
  });
});

describe('parseReference rejects bad input with a precise reason', () => {
  const cases: [string, RegExp][] = [
    ['', /^repository name must have at least one component/],
    ['UBUNTU', /^repository name must be lowercase/],
    ['Ubuntu:latest', /^repository name must be lowercase/],
    ['foo/Bar', /^repository name must be lowercase/],
    ['r.io/foo/BAR:1', /^repository name must be lowercase/],
    ['foo//bar', /^invalid reference format: .*empty path component/],
    ['foo/', /^invalid reference format: .*empty path component/],
    ['/foo', /^invalid reference format: .*empty path component/],
    ['r.io/', /^invalid reference format: .*missing repository path/],
    ['r.io//a', /^invalid reference format: .*empty path component/],
    [':tag', /^invalid reference format: .*missing repository name/],
    [`@${SHA256}`, /^invalid reference format: .*missing repository name/],
    // A first component with a dot is a host, and `_` is not allowed in hosts.
    ['a-b_c.d__e/f', /^invalid reference format: .*invalid registry host/],
    ['foo..bar', /^invalid reference format: .*invalid path component/],
    ['foo._bar', /^invalid reference format/],
    ['foo___bar', /^invalid reference format/],
    ['-foo', /^invalid reference format/],
    ['foo-', /^invalid reference format/],
    ['foo_', /^invalid reference format/],
    ['.foo', /^invalid reference format/],
    ['foo bar', /^invalid reference format/],
    ['foo/bar baz', /^invalid reference format/],
    ['foo\u00e9', /^invalid reference format/],
    ['foo/bar:5000/baz', /^invalid reference format/],
    ['-r.io/a', /^invalid reference format: .*invalid registry host/],
    ['r-.io/a', /^invalid reference format: .*invalid registry host/],
    ['r_x.io/a', /^invalid reference format: .*invalid registry host/],
    ['r.io:/a', /^invalid reference format: .*invalid registry host/],
    ['r.io:50a/a', /^invalid reference format: .*invalid registry host/],
    ['r..io/a', /^invalid reference format: .*invalid registry host/],
    ['[::1/a', /^invalid reference format/],
    ['[fe80::1%eth0]/a', /^invalid reference format: .*invalid registry host/],
    ['[]:5000/a', /^invalid reference format: .*invalid registry host/],
    ['[::1]:5000', /^invalid reference format/],
    ['foo:', /^invalid tag format: .*empty tag/],
    ['foo:-x', /^invalid tag format/],
    ['foo:.x', /^invalid tag format/],
    ['foo:a:b', /^invalid tag format/],
    ['foo:a/b', /^invalid reference format/],
    ['foo:a b', /^invalid tag format/],
    ['foo:é', /^invalid tag format/],
    ['foo@', /^invalid digest format/],
    ['foo@sha256:abc', /^invalid digest format: .*want 64 hex/],
    [`foo@sha256:${'a'.repeat(63)}`, /^invalid digest format: .*want 64 hex/],
    [`foo@sha256:${'a'.repeat(65)}`, /^invalid digest format: .*want 64 hex/],
    [`foo@sha256:${'a'.repeat(128)}`, /^invalid digest format: .*want 64 hex/],
    [`foo@sha512:${'a'.repeat(64)}`, /^invalid digest format: .*want 128 hex/],
    [`foo@sha256:${'A'.repeat(64)}`, /^invalid digest format: .*lowercase/],
    [`foo@md5:${'a'.repeat(32)}`, /^invalid digest format: .*unsupported digest algorithm/],
    [`foo@${'a'.repeat(64)}`, /^invalid digest format/],
    [`foo@${SHA256}@${SHA256}`, /^invalid digest format/],
    [`foo@${SHA256}:tag`, /^invalid digest format/],
  ];
  for (const [input, reason] of cases) {
    test(JSON.stringify(input.length > 60 ? `${input.slice(0, 60)}…` : input), () => rejects(input, reason));
  }
});

describe('parseNormalizedReference applies the Docker Hub defaults', () => {
  const cases: [string, string][] = [
    ['ubuntu', 'docker.io/library/ubuntu'],
    ['ubuntu:22.04', 'docker.io/library/ubuntu:22.04'],
    [`ubuntu@${SHA256}`, `docker.io/library/ubuntu@${SHA256}`],
    ['foo/bar', 'docker.io/foo/bar'],
    ['foo/bar/baz:1', 'docker.io/foo/bar/baz:1'],
    ['docker.io/ubuntu', 'docker.io/library/ubuntu'],
    ['docker.io/library/ubuntu', 'docker.io/library/ubuntu'],
    ['index.docker.io/ubuntu', 'docker.io/library/ubuntu'],
    ['index.docker.io/foo/bar:x', 'docker.io/foo/bar:x'],
    ['registry-1.docker.io/ubuntu', 'docker.io/library/ubuntu'],
    ['localhost/foo', 'localhost/foo'],
    ['localhost:5000/foo', 'localhost:5000/foo'],
    ['ghcr.io/foo', 'ghcr.io/foo'],
    ['quay.io/a/b:c', 'quay.io/a/b:c'],
    ['[::1]:5000/foo', '[::1]:5000/foo'],
    // A lone component with a dot is still a Hub repository: the domain needs a slash after it.
    ['foo.bar', 'docker.io/library/foo.bar'],
  ];
  for (const [input, want] of cases) {
    test(input, () => assert.equal(formatReference(parseNormalizedReference(input)), want));
  }

  test('no default tag is added; withDefaultTag adds latest only when neither tag nor digest', () => {
    const r = parseNormalizedReference('ubuntu');
    assert.equal(r.tag, undefined);
    assert.deepEqual(withDefaultTag(r), { domain: 'docker.io', path: 'library/ubuntu', tag: 'latest' });
    assert.equal(r.tag, undefined, 'withDefaultTag must not modify its argument');
    assert.equal(withDefaultTag(parseNormalizedReference('ubuntu:1')).tag, '1');
    const pinned = withDefaultTag(parseNormalizedReference(`ubuntu@${SHA256}`));
    assert.equal(pinned.tag, undefined);
    assert.equal(pinned.digest, SHA256);
  });

  test('rejects a bare image ID', () => {
    rejects('a'.repeat(64), /image ID/, parseNormalizedReference);
    // 63 or 65 hex characters are ordinary names.
    assert.equal(parseNormalizedReference('a'.repeat(63)).path, `library/${'a'.repeat(63)}`);
  });

  test('the length limit applies to the normalised name', () => {
    const p = 'a'.repeat(238); // docker.io/library/ + 238 = 256
    assert.equal(parseReference(p).path, p);
    rejects(p, /^repository name must not be more than 255 characters/, parseNormalizedReference);
    assert.equal(parseNormalizedReference(p.slice(1)).path, `library/${p.slice(1)}`);
  });

  test('passes through strict-grammar errors', () => {
    rejects('Ubuntu', /^repository name must be lowercase/, parseNormalizedReference);
    rejects('foo:', /^invalid tag format/, parseNormalizedReference);
    rejects('', /^repository name must have at least one component/, parseNormalizedReference);
  });
});

describe('familiarString prints what docker prints', () => {
  const cases: [string, string][] = [
    ['docker.io/library/ubuntu', 'ubuntu'],
    ['docker.io/library/ubuntu:22.04', 'ubuntu:22.04'],
    [`docker.io/library/ubuntu:1@${SHA256}`, `ubuntu:1@${SHA256}`],
    ['docker.io/foo/bar', 'foo/bar'],
    ['docker.io/library/foo/bar', 'library/foo/bar'],
    ['index.docker.io/library/ubuntu', 'ubuntu'],
    ['ghcr.io/library/ubuntu', 'ghcr.io/library/ubuntu'],
    ['localhost:5000/foo:1', 'localhost:5000/foo:1'],
    // Dropping docker.io here would turn `foo.bar` into a registry host.
    ['docker.io/foo.bar/baz', 'docker.io/foo.bar/baz'],
    ['docker.io/localhost/baz', 'docker.io/localhost/baz'],
    ['docker.io/library/foo.bar', 'foo.bar'],
  ];
  for (const [input, want] of cases) {
    test(input, () => {
      const r = parseNormalizedReference(input);
      assert.equal(familiarString(r), want);
      assert.deepEqual(parseNormalizedReference(familiarString(r)), r);
    });
  }
  test('a reference without a domain is familiar already', () => {
    assert.equal(familiarString(parseReference('foo/bar:1')), 'foo/bar:1');
    assert.equal(familiarString(parseReference('library/ubuntu')), 'ubuntu');
  });
});

describe('repositoryName and referenceTarget', () => {
  test('repositoryName is domain/path without tag or digest', () => {
    assert.equal(repositoryName(parseNormalizedReference(`ubuntu:1@${SHA256}`)), 'docker.io/library/ubuntu');
    assert.equal(repositoryName(parseReference('foo/bar:1')), 'foo/bar');
    assert.equal(repositoryName(parseReference('[::1]:5000/a:1')), '[::1]:5000/a');
  });
  test('referenceTarget prefers the digest, then the tag, then latest', () => {
    assert.equal(referenceTarget(parseReference(`a:1@${SHA256}`)), SHA256);
    assert.equal(referenceTarget(parseReference(`a@${SHA512}`)), SHA512);
    assert.equal(referenceTarget(parseReference('a:1')), '1');
    assert.equal(referenceTarget(parseReference('a')), 'latest');
  });
});

describe('validators', () => {
  test('isValidTag', () => {
    assert.equal(isValidTag('v1.0-rc_1'), true);
    assert.equal(isValidTag('x'.repeat(128)), true);
    assert.equal(isValidTag('x'.repeat(129)), false);
    assert.equal(isValidTag(''), false);
    assert.equal(isValidTag('.x'), false);
    assert.equal(isValidTag('x\n'), false);
  });
  test('isValidDomain', () => {
    assert.equal(isValidDomain('r.io:5000'), true);
    assert.equal(isValidDomain('[::1]:5000'), true);
    assert.equal(isValidDomain('r.io:'), false);
    assert.equal(isValidDomain('r.io\n'), false);
  });
  test('isValidRepositoryPath', () => {
    assert.equal(isValidRepositoryPath('library/ubuntu'), true);
    assert.equal(isValidRepositoryPath('a//b'), false);
    assert.equal(isValidRepositoryPath('A'), false);
    assert.equal(isValidRepositoryPath('a\n'), false);
  });
});

// Generators for references the strict grammar accepts.
const component = fc.stringMatching(/^[a-z0-9]{1,8}(?:(?:[._]|__|-{1,3})[a-z0-9]{1,8}){0,3}$/);
const domainArb = fc.oneof(
  fc.constant(''),
  fc.constantFrom('localhost', 'localhost:5000', '[::1]', '[::1]:5000', 'Registry', 'a.b.c:1'),
  fc
    .tuple(
      fc.array(fc.stringMatching(/^[a-zA-Z0-9](?:[a-zA-Z0-9-]{0,6}[a-zA-Z0-9])?$/), {
        minLength: 2,
        maxLength: 4,
      }),
      fc.option(fc.integer({ min: 0, max: 65535 }), { nil: undefined }),
    )
    .map(([labels, port]) => labels.join('.') + (port === undefined ? '' : `:${port}`)),
);
const tagArb = fc.stringMatching(/^\w[\w.-]{0,127}$/);
const digestArb = fc.oneof(
  fc.stringMatching(/^[0-9a-f]{64}$/).map((h) => `sha256:${h}` as Digest),
  fc.stringMatching(/^[0-9a-f]{128}$/).map((h) => `sha512:${h}` as Digest),
);
const referenceArb = fc
  .record(
    {
      domain: domainArb,
      path: fc.array(component, { minLength: 1, maxLength: 4 }).map((cs) => cs.join('/')),
      tag: tagArb,
      digest: digestArb,
    },
    { requiredKeys: ['domain', 'path'], noNullPrototype: true },
  )
  .filter((r) => {
    if (repositoryName(r).length > 255) return false;
    // Without a domain, a first component with a dot would be read as one.
    const first = r.path.split('/')[0]!;
    return !(r.domain === '' && r.path.includes('/') && (first.includes('.') || first === 'localhost'));
  });

describe('properties', () => {
  test('format then parse gives back the same reference', () => {
    fc.assert(
      fc.property(referenceArb, (r) => {
        assert.deepEqual(parseReference(formatReference(r)), r);
      }),
      { numRuns: 500 },
    );
  });

  test('familiar form parses back to the same normalised reference', () => {
    fc.assert(
      fc.property(referenceArb, (r) => {
        let n: Reference;
        try {
          n = parseNormalizedReference(formatReference(r));
        } catch (err) {
          // Normalising may push a long name over the limit, or the input may be an image ID.
          assert.ok(isInvalidArgument(err));
          return;
        }
        assert.deepEqual(parseNormalizedReference(familiarString(n)), n);
        assert.deepEqual(parseNormalizedReference(formatReference(n)), n);
      }),
      { numRuns: 500 },
    );
  });

  test('any string either parses and formats back to itself or is InvalidArgument', () => {
    const chars = fc.constantFrom(...'aAz09._-/:@[]%Ü \n'.split(''), 'sha256:', 'b'.repeat(64));
    fc.assert(
      fc.property(fc.array(chars, { maxLength: 40 }), (parts) => {
        const s = parts.join('');
        let r: Reference;
        try {
          r = parseReference(s);
        } catch (err) {
          assert.ok(isInvalidArgument(err), String(err));
          return;
        }
        assert.equal(formatReference(r), s);
      }),
      { numRuns: 2000 },
    );
  });
});
