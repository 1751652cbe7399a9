// Bearer tokens as docker distribution's token specification defines them: a JWT signed by the token
// server (the realm), verified here with its public key(s) from a PEM file (public keys or certificates) or
// a JWKS file, checked for issuer, audience (the service) and lifetime, and carrying the granted access as
// `access: [{type: "repository", name, actions: ["pull"]}]`.
import { createPublicKey, type JsonWebKey, type KeyObject } from 'node:crypto';
import {
  createLocalJWKSet,
  decodeProtectedHeader,
  type JWTPayload,
  type JWTVerifyOptions,
  errors as joseErrors,
  jwtVerify,
} from 'jose';
import { invalidArgument, messageOf } from '../../errors.ts';

// Asymmetric algorithms only: a shared-secret (HS*) or unsigned token is never accepted.
const ALGORITHMS = ['ES256', 'ES384', 'ES512', 'RS256', 'RS384', 'RS512', 'PS256', 'PS384', 'PS512', 'EdDSA'];
const CLOCK_SKEW_SECONDS = 30;
const MAX_KEYS = 64;
const WANTED_KEYS = 'want EC P-256, P-384 or P-521, RSA of 2048 bits or more, or Ed25519';

export interface Access {
  type: string;
  name: string;
  actions: string[];
}

/** Keys that verify a token's signature: PEM keys tried in turn, or a JWKS picked from by the header. */
export type TokenKeys =
  | { kind: 'pem'; keys: KeyObject[] }
  | { kind: 'jwks'; set: ReturnType<typeof createLocalJWKSet> };

/**
 * Public keys or certificates (PEM, one or more), or a JWKS document. Either is refused when a key is
 * malformed or private, or when no key could verify a token of an accepted algorithm.
 */
export async function parseTokenKeys(bytes: Buffer, where: string): Promise<TokenKeys> {
  const text = bytes.toString('utf8').trim();
  if (text.startsWith('{')) return parseJwks(text, where);
  const blocks = text.match(/-----BEGIN [A-Z ]+-----[\s\S]+?-----END [A-Z ]+-----/g) ?? [];
  if (blocks.length === 0) throw invalidArgument(`${where}: want PEM public keys or certificates, or a JWKS`);
  if (blocks.length > MAX_KEYS) throw invalidArgument(`${where}: more than ${MAX_KEYS} keys`);
  const keys = blocks.map((pem, i) => {
    if (pem.includes('PRIVATE KEY')) throw invalidArgument(`${where}: block ${i + 1} is a private key`);
    try {
      return createPublicKey(pem);
    } catch (err) {
      throw invalidArgument(`${where}: block ${i + 1}: ${messageOf(err)}`);
    }
  });
  if (!keys.some((k) => ALGORITHMS.some((alg) => fitsAlgorithm(k, alg)))) {
    throw invalidArgument(`${where}: no key here can verify tokens (${WANTED_KEYS})`);
  }
  return { kind: 'pem', keys };
}

/**
 * A JWKS is only parsed by jose when a token comes: checked here key by key, with jose's own choice of key
 * for each accepted algorithm, so a set that would refuse every token is refused when it is read.
 */
async function parseJwks(text: string, where: string): Promise<TokenKeys> {
  let doc: unknown;
  try {
    doc = JSON.parse(text);
  } catch (err) {
    throw invalidArgument(`${where}: ${messageOf(err)}`);
  }
  const keys = (doc as { keys?: unknown }).keys;
  if (!Array.isArray(keys) || keys.length === 0) throw invalidArgument(`${where}: want a JWKS with keys`);
  // Tokens without a key id are tried against every key that fits: the bound keeps that cost small.
  if (keys.length > MAX_KEYS) throw invalidArgument(`${where}: more than ${MAX_KEYS} keys`);
  let set: ReturnType<typeof createLocalJWKSet>;
  try {
    set = createLocalJWKSet(doc as Parameters<typeof createLocalJWKSet>[0]);
  } catch (err) {
    throw invalidArgument(`${where}: ${messageOf(err)}`);
  }
  const unusable: string[] = [];
  for (const [i, jwk] of (keys as Record<string, unknown>[]).entries()) {
    const kid = typeof jwk.kid === 'string' ? ` (kid ${JSON.stringify(jwk.kid)})` : '';
    const why = await jwkProblem(jwk, `${where}: key ${i + 1}${kid}`);
    if (why !== undefined) unusable.push(`key ${i + 1}${kid}: ${why}`);
  }
  if (unusable.length === keys.length) {
    throw invalidArgument(`${where}: no key here can verify tokens (${unusable.join('; ')}; ${WANTED_KEYS})`);
  }
  return { kind: 'jwks', set };
}

/**
 * Undefined when jose would verify a token with `jwk` for one of ALGORITHMS; otherwise why not. Throws for
 * a key that is broken (jose picks it, then fails to import it) or private, as a bad PEM block is refused.
 */
async function jwkProblem(jwk: Record<string, unknown>, name: string): Promise<string | undefined> {
  if (jwk.d !== undefined) throw invalidArgument(`${name} is a private key`);
  const one = createLocalJWKSet({ keys: [jwk] });
  for (const alg of ALGORITHMS) {
    let key: CryptoKey;
    try {
      key = await one({ alg });
    } catch (err) {
      if (err instanceof joseErrors.JWKSNoMatchingKey) continue;
      const node = nodeKey(jwk);
      throw invalidArgument(`${name}: ${typeof node === 'string' ? node : messageOf(err)}`);
    }
    // jose refuses short RSA keys only when it verifies with them.
    const bits = (key.algorithm as Partial<RsaHashedKeyAlgorithm>).modulusLength;
    if (bits === undefined || bits >= 2048) return undefined;
  }
  return unusableReason(jwk);
}

/** The key as Node reads it, or Node's account of what is wrong with it (WebCrypto says "Invalid keyData"). */
function nodeKey(jwk: Record<string, unknown>): KeyObject | string {
  const members = jwk.kty === 'RSA' ? ['n', 'e'] : jwk.kty === 'EC' ? ['crv', 'x', 'y'] : ['crv', 'x'];
  const missing = members.filter((m) => typeof jwk[m] !== 'string');
  if (missing.length > 0) return `${String(jwk.kty)} key without ${missing.join(', ')}`;
  try {
    return createPublicKey({ key: jwk as JsonWebKey, format: 'jwk' });
  } catch (err) {
    return messageOf(err);
  }
}

/** Why jose would never pick a well-formed key, in the key's own terms. */
function unusableReason(jwk: Record<string, unknown>): string {
  const { kty, crv, alg, use } = jwk;
  const ops = jwk.key_ops;
  if (kty === 'oct') return 'a shared secret (kty "oct"): tokens are verified with public keys only';
  if (kty !== 'EC' && kty !== 'RSA' && kty !== 'OKP') return `kty ${JSON.stringify(kty)}`;
  if (use !== undefined && use !== 'sig') return `use ${JSON.stringify(use)}, not "sig"`;
  if (ops !== undefined && !(Array.isArray(ops) && ops.includes('verify'))) return 'key_ops without "verify"';
  if (alg !== undefined && !ALGORITHMS.includes(String(alg))) return `alg ${JSON.stringify(alg)}`;
  if (kty === 'RSA') {
    const node = nodeKey(jwk);
    const bits = typeof node === 'string' ? undefined : node.asymmetricKeyDetails?.modulusLength;
    if (bits !== undefined && bits < 2048) return `RSA of ${bits} bits`;
  }
  if (kty !== 'RSA' && crv !== undefined) {
    const fits = kty === 'EC' ? ['P-256', 'P-384', 'P-521'] : ['Ed25519'];
    if (!fits.includes(String(crv))) return `curve ${JSON.stringify(crv)}`;
  }
  if (alg !== undefined) return `alg ${JSON.stringify(alg)} does not fit this ${String(kty)} key`;
  return `fits none of ${ALGORITHMS.join(', ')}`;
}

export interface TokenExpectations {
  issuer: string;
  /** The service name, which tokens carry as their audience. */
  service: string;
}

export type TokenResult = { ok: true; subject: string; access: Access[] } | { ok: false; reason: string };

/** Verifies a token; never throws for a bad token (the reason says what was wrong). */
export async function verifyToken(
  token: string,
  keys: TokenKeys,
  expect: TokenExpectations,
): Promise<TokenResult> {
  const options = {
    issuer: expect.issuer,
    audience: expect.service,
    algorithms: ALGORITHMS,
    clockTolerance: CLOCK_SKEW_SECONDS,
    requiredClaims: ['exp'],
  };
  let payload: JWTPayload | undefined;
  let reason = 'no key verifies the token';
  try {
    if (keys.kind === 'jwks') {
      try {
        payload = (await jwtVerify(token, keys.set, options)).payload;
      } catch (err) {
        // Several keys of the set fit the token (none has a `kid` to tell them apart, as in a rotation):
        // jose hands them over to be tried in turn.
        if (!(err instanceof joseErrors.JWKSMultipleMatchingKeys)) throw err;
        payload = await verifyWithAny(token, err, options);
      }
    } else {
      // A bundle may mix key types (a rotation from RSA to EC): only keys of the token's algorithm are
      // tried, as jose refuses the others with an error that is not a signature failure.
      const alg = decodeProtectedHeader(token).alg;
      payload = await verifyWithAny(
        token,
        keys.keys.filter((k) => fitsAlgorithm(k, alg)),
        options,
      );
    }
  } catch (err) {
    reason = err instanceof joseErrors.JWTExpired ? 'the token has expired' : messageOf(err);
    payload = undefined;
  }
  if (payload === undefined) return { ok: false, reason };
  return { ok: true, subject: typeof payload.sub === 'string' ? payload.sub : '', access: accessOf(payload) };
}

/** The payload as the first of `candidates` that verifies the signature finds it; undefined if none does. */
async function verifyWithAny(
  token: string,
  candidates: Iterable<KeyObject> | AsyncIterable<CryptoKey>,
  options: JWTVerifyOptions,
): Promise<JWTPayload | undefined> {
  for await (const key of candidates) {
    try {
      return (await jwtVerify(token, key, options)).payload;
    } catch (err) {
      // Another key may have signed it; any other failure is the token's.
      if (!(err instanceof joseErrors.JWSSignatureVerificationFailed)) throw err;
    }
  }
  return undefined;
}

const CURVES: Record<string, string> = { ES256: 'prime256v1', ES384: 'secp384r1', ES512: 'secp521r1' };

/**
 * Whether `key` can check a signature made with `alg`, as jose checks it: a key it refuses (Ed448, RSA
 * under 2048 bits, an RSA-PSS key) would end the search with that refusal before the key that fits.
 */
function fitsAlgorithm(key: KeyObject, alg: string | undefined): boolean {
  const type = key.asymmetricKeyType;
  if (alg === undefined) return false;
  if (alg.startsWith('ES')) return type === 'ec' && key.asymmetricKeyDetails?.namedCurve === CURVES[alg];
  if (alg.startsWith('RS') || alg.startsWith('PS'))
    return type === 'rsa' && (key.asymmetricKeyDetails?.modulusLength ?? 0) >= 2048;
  if (alg === 'EdDSA' || alg === 'Ed25519') return type === 'ed25519';
  return false;
}

function accessOf(payload: JWTPayload): Access[] {
  const raw = payload.access;
  if (!Array.isArray(raw)) return [];
  const out: Access[] = [];
  for (const a of raw as unknown[]) {
    if (typeof a !== 'object' || a === null) continue;
    const { type, name, actions } = a as Record<string, unknown>;
    if (typeof type !== 'string' || typeof name !== 'string' || !Array.isArray(actions)) continue;
    out.push({ type, name, actions: actions.filter((x): x is string => typeof x === 'string') });
  }
  return out;
}

/**
 * Whether the access list grants `action` on the resource (`repository` and its name, or `registry` and
 * `catalog`); `*` grants every action.
 */
export function grants(access: Access[], type: string, name: string, action: string): boolean {
  return access.some(
    (a) => a.type === type && a.name === name && (a.actions.includes(action) || a.actions.includes('*')),
  );
}
