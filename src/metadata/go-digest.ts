// Digest validation with go-digest's error texts, which containerd embeds in its messages
// (`Target.Digest "…" invalid: invalid checksum digest length`). The algorithms available are go-digest's
// own (sha256, sha384, sha512), which our content store supports too.

const SIZES: Record<string, number> = { sha256: 32, sha384: 48, sha512: 64 };
const DIGEST_RE = /^[a-z0-9]+(?:[.+_-][a-z0-9]+)*:[a-zA-Z0-9=_-]+$/;

/** The go-digest error text for s, or undefined when s is a valid digest. */
export function goDigestError(s: string): string | undefined {
  const i = s.indexOf(':');
  if (i <= 0 || i + 1 === s.length) return 'invalid checksum digest format';
  const algorithm = s.slice(0, i);
  const encoded = s.slice(i + 1);
  const size = Object.hasOwn(SIZES, algorithm) ? SIZES[algorithm] : undefined;
  if (size === undefined) {
    return DIGEST_RE.test(s) ? 'unsupported digest algorithm' : 'invalid checksum digest format';
  }
  if (encoded.length !== size * 2) return 'invalid checksum digest length';
  return /^[a-f0-9]+$/.test(encoded) ? undefined : 'invalid checksum digest format';
}
