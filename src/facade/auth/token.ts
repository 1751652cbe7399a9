// Bearer tokens as docker distribution's token specification defines them: a JWT signed by the token
// server (the realm), verified here with its public key(s) from a PEM file (public keys or certificates) or
// a JWKS file, checked for issuer, audience (the service) and lifetime, and carrying the granted access as
// `access: [{type: "repository", name, actions: ["pull"]}]`.
import { createPublicKey, type KeyObject } from 'node:crypto';
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

export interface Access {
  type: string;
  name: string;
  actions: string[];
}

/** Keys that verify a token's signature: PEM keys tried in turn, or a JWKS picked from by the header. */
export type TokenKeys =
  | { kind: 'pem'; keys: KeyObject[] }
  | { kind: 'jwks'; set: ReturnType<typeof createLocalJWKSet> };

/** Public keys or certificates (PEM, one or more), or a JWKS document. */
export function parseTokenKeys(bytes: Buffer, where: string): TokenKeys {
  const text = bytes.toString('utf8').trim();
  if (text.startsWith('{')) {
    let doc: unknown;
    try {
      doc = JSON.parse(text);
    } catch (err) {
      throw invalidArgument(`${where}: ${messageOf(err)}`);
    }
    const keys = (doc as { keys?: unknown }).keys;
    if (!Array.isArray(keys) || keys.length === 0) throw invalidArgument(`${where}: want a JWKS with keys`);
    try {
      return { kind: 'jwks', set: createLocalJWKSet(doc as Parameters<typeof createLocalJWKSet>[0]) };
    } catch (err) {
      throw invalidArgument(`${where}: ${messageOf(err)}`);
    }
  }
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
    throw invalidArgument(
      `${where}: no key here can verify tokens (want EC P-256, P-384 or P-521, RSA of 2048 bits or more, or Ed25519)`,
    );
  }
  return { kind: 'pem', keys };
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

/** Whether the access list grants `action` on the repository (`*` grants every action). */
export function grants(access: Access[], repository: string, action: string): boolean {
  return access.some(
    (a) =>
      a.type === 'repository' &&
      a.name === repository &&
      (a.actions.includes(action) || a.actions.includes('*')),
  );
}
