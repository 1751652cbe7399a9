// What a service reads to reach another one: a secret kept in a file (a mounted Kubernetes secret, say)
// and a TLS client's files; and from them the credentials of a Redis endpoint, which the facade's shared
// cache and the builder's shared builds are both configured with.
import { readFile } from 'node:fs/promises';
import { invalidArgument } from '../errors.ts';
import type { RedisCredentials } from '../redis-connection.ts';
import { unknownKeys } from './config-keys.ts';

/** Files of a TLS client: the CA to trust (else the system's), a client certificate, the name to verify. */
export interface TlsClientFiles {
  ca?: string;
  cert?: string;
  key?: string;
  serverName?: string;
}

/** The keys of a config's TLS client files. */
export const TLS_CLIENT_KEYS = { ca: null, cert: null, key: null, serverName: null } as const;

/**
 * A config's TLS client files (`ca`, `cert` with `key`, `serverName`): paths made by `path`, problems
 * reported through `fail` under `where`.
 */
export function tlsClientFilesFrom(
  v: unknown,
  where: string,
  path: (v: unknown, where: string) => string,
  fail: (where: string, what: string) => never,
): TlsClientFiles {
  if (typeof v !== 'object' || v === null || Array.isArray(v)) fail(where, 'want a mapping');
  const t = v as Record<string, unknown>;
  for (const k of unknownKeys(t, TLS_CLIENT_KEYS)) fail(`${where}.${k}`, 'unknown key');
  const files: TlsClientFiles = {};
  for (const k of ['ca', 'cert', 'key'] as const) {
    if (t[k] !== undefined && t[k] !== null) files[k] = path(t[k], `${where}.${k}`);
  }
  if (t.serverName !== undefined && t.serverName !== null) {
    if (typeof t.serverName !== 'string' || t.serverName === '')
      fail(`${where}.serverName`, 'want a host name');
    files.serverName = t.serverName;
  }
  if ((files.cert === undefined) !== (files.key === undefined)) fail(where, 'cert and key go together');
  return files;
}

/** A Redis as a config names it: its URL, a file with its password, TLS files for a `rediss://` URL. */
export interface RedisEndpoint {
  url: string;
  passwordFile?: string;
  tls?: TlsClientFiles;
}

/**
 * A `redis://` or `rediss://` URL, refusing what node-redis would refuse only when it connects, with words
 * of its own and no key named ("Invalid pathname", "URI malformed"): a database that is not a number,
 * credentials that do not percent-decode. The URL itself is not repeated: it may carry the password.
 */
export function checkRedisUrl(
  url: unknown,
  where: string,
  fail: (where: string, what: string) => never,
): asserts url is string {
  if (typeof url !== 'string' || !/^rediss?:\/\//.test(url) || !URL.canParse(url))
    fail(where, 'want a URL such as redis://host:6379');
  const u = new URL(url);
  if (u.pathname.length > 1 && !/^\/\d+$/.test(u.pathname))
    fail(where, "the URL's database must be a number (redis://host:6379/0)");
  try {
    decodeURIComponent(u.username);
    decodeURIComponent(u.password);
  } catch {
    fail(where, "the URL's user and password must be valid percent-encoding");
  }
}

/** The rules between a Redis endpoint's settings; `fail` reports the key at fault (under `where`). */
export function checkRedisEndpoint(
  e: RedisEndpoint,
  where: string,
  fail: (where: string, what: string) => never,
): void {
  if (e.passwordFile !== undefined && new URL(e.url).password !== '')
    fail(`${where}.passwordFile`, 'the URL has a password already: give it once');
  if (e.tls && !e.url.startsWith('rediss://')) fail(`${where}.tls`, 'wants a rediss:// URL');
}

/**
 * A Redis endpoint's credentials: the password file is read now (a missing or empty one fails the start)
 * and again at every connection (a rotated secret is picked up); the TLS files are read now.
 */
export async function redisCredentials(e: RedisEndpoint): Promise<RedisCredentials> {
  const file = e.passwordFile;
  if (file !== undefined) await readSecret(file);
  return {
    ...(file !== undefined && { password: () => readSecret(file) }),
    ...(e.tls && { tls: await readTlsClientFiles(e.tls) }),
  };
}

/** A TLS client's files, read. */
export async function readTlsClientFiles(
  f: TlsClientFiles,
): Promise<{ ca?: Buffer; cert?: Buffer; key?: Buffer; serverName?: string }> {
  const read = (file: string | undefined) => (file === undefined ? undefined : readFile(file));
  const [ca, cert, key] = await Promise.all([read(f.ca), read(f.cert), read(f.key)]);
  return {
    ...(ca && { ca }),
    ...(cert && { cert }),
    ...(key && { key }),
    ...(f.serverName !== undefined && { serverName: f.serverName }),
  };
}

/** A secret from a file, without the line end it may carry. */
export async function readSecret(file: string): Promise<string> {
  const secret = (await readFile(file, 'utf8')).replace(/\r?\n$/, '');
  if (secret === '') throw invalidArgument(`${file}: the file is empty`);
  return secret;
}
