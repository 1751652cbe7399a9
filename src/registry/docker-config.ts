// Credentials from Docker's config.json: `auths` entries, per-host `credHelpers` and the default `credsStore`,
// looked up in that order (a helper that knows nothing falls back to `auths`). The file is re-read when it
// changes, so a long-running process sees `docker login` without a restart.
import { spawn } from 'node:child_process';
import { readFile, stat } from 'node:fs/promises';
import { homedir } from 'node:os';
import { join } from 'node:path';
import {
  aborted,
  deadlineExceeded,
  failedPrecondition,
  invalidArgument,
  messageOf,
  unavailable,
} from '../errors.ts';
import type { CredentialStore, Credentials } from './credentials.ts';
import { canonicalHost, DOCKER_HUB } from './hosts.ts';
import { jsonProblem } from './registry-errors.ts';

export interface DockerConfig {
  /** By canonical host; an Error when the entry is malformed (reported when that host is asked for). */
  auths: Map<string, Credentials | Error>;
  credHelpers: Map<string, string>;
  credsStore?: string;
}

/** The server URL Docker hands credential helpers for Docker Hub. */
const DOCKER_HUB_SERVER_URL = 'https://index.docker.io/v1/';
const HELPER_NAME_RE = /^[A-Za-z0-9][A-Za-z0-9._-]*$/;
const MAX_HELPER_OUTPUT = 1 << 20;
const HELPER_CACHE_ENTRIES = 64;

/** `https://index.docker.io/v1/`, `http://host:5000/v2`, `Host:5000` → `docker.io`, `host:5000`. */
export function normalizeConfigKey(key: string): string {
  let k = key.trim();
  const scheme = /^[a-z][a-z0-9+.-]*:\/\//i.exec(k);
  if (scheme) k = k.slice(scheme[0].length);
  const slash = k.indexOf('/');
  if (slash >= 0) k = k.slice(0, slash);
  return canonicalHost(k);
}

export function defaultDockerConfigPath(env: NodeJS.ProcessEnv = process.env): string {
  const dir = env.DOCKER_CONFIG || join(env.HOME || homedir(), '.docker');
  return join(dir, 'config.json');
}

/** Parses config.json text; `where` names the file in errors. */
export function parseDockerConfig(text: string, where = 'docker config'): DockerConfig {
  let raw: unknown;
  try {
    raw = JSON.parse(text);
  } catch (err) {
    throw invalidArgument(`${where}: not valid JSON: ${jsonProblem(err)}`);
  }
  if (!isObject(raw)) throw invalidArgument(`${where}: not a JSON object`);
  const out: DockerConfig = { auths: new Map(), credHelpers: new Map() };
  if (raw.auths !== undefined) {
    if (!isObject(raw.auths)) throw invalidArgument(`${where}: "auths" is not an object`);
    for (const [key, entry] of Object.entries(raw.auths)) {
      const host = normalizeConfigKey(key);
      const exact = key.toLowerCase() === host;
      if (out.auths.has(host) && !exact) continue;
      const creds = authEntry(entry, `${where}: auths[${JSON.stringify(key)}]`);
      if (creds === undefined) {
        if (exact) out.auths.delete(host);
      } else {
        out.auths.set(host, creds);
      }
    }
  }
  if (raw.credHelpers !== undefined) {
    if (!isObject(raw.credHelpers)) throw invalidArgument(`${where}: "credHelpers" is not an object`);
    for (const [key, name] of Object.entries(raw.credHelpers)) {
      if (typeof name !== 'string' || !HELPER_NAME_RE.test(name)) {
        throw invalidArgument(`${where}: credHelpers[${JSON.stringify(key)}]: invalid helper name`);
      }
      out.credHelpers.set(normalizeConfigKey(key), name);
    }
  }
  if (raw.credsStore !== undefined && raw.credsStore !== '') {
    if (typeof raw.credsStore !== 'string' || !HELPER_NAME_RE.test(raw.credsStore)) {
      throw invalidArgument(`${where}: invalid "credsStore"`);
    }
    out.credsStore = raw.credsStore;
  }
  return out;
}

function authEntry(entry: unknown, where: string): Credentials | Error | undefined {
  if (!isObject(entry)) return invalidArgument(`${where}: not an object`);
  const str = (k: string): string | undefined =>
    typeof entry[k] === 'string' ? (entry[k] as string) : undefined;
  let username = str('username');
  let password = str('password');
  const auth = str('auth');
  if (auth) {
    const decoded = Buffer.from(auth, 'base64').toString('utf8');
    const colon = decoded.indexOf(':');
    if (colon < 0) return invalidArgument(`${where}: "auth" is not base64 of user:password`);
    username = decoded.slice(0, colon);
    password = decoded.slice(colon + 1);
  }
  const identity = str('identitytoken');
  if (identity) return { kind: 'identityToken', token: identity, ...(username ? { username } : {}) };
  if (username && password !== undefined && (username !== '' || password !== '')) {
    return { kind: 'basic', username, password };
  }
  return undefined;
}

export interface HelperOptions {
  env?: NodeJS.ProcessEnv;
  timeoutMs?: number;
  signal?: AbortSignal;
}

/**
 * Runs `docker-credential-<name> get` with the server URL on stdin. Resolves undefined when the helper
 * has nothing for that server. The helper's stdout is never put in an error message unless it failed
 * (then it holds the helper's error text, not a secret).
 */
export function runCredentialHelper(
  name: string,
  host: string,
  options: HelperOptions = {},
): Promise<Credentials | undefined> {
  if (!HELPER_NAME_RE.test(name)) return Promise.reject(invalidArgument(`invalid credential helper ${name}`));
  const program = `docker-credential-${name}`;
  const serverUrl = canonicalHost(host) === DOCKER_HUB ? DOCKER_HUB_SERVER_URL : host;
  const timeoutMs = options.timeoutMs ?? 10_000;
  if (options.signal?.aborted) return Promise.reject(aborted(`credential helper ${program}: aborted`));
  return new Promise((resolve, reject) => {
    // Its own process group, so a timeout also ends whatever the helper started (which would otherwise
    // hold the pipes open).
    const child = spawn(program, ['get'], {
      env: options.env ?? process.env,
      stdio: ['pipe', 'pipe', 'pipe'],
      detached: true,
    });
    const out: Buffer[] = [];
    const err: Buffer[] = [];
    let outBytes = 0;
    let settled = false;
    const finish = (): boolean => {
      if (settled) return false;
      settled = true;
      clearTimeout(timer);
      options.signal?.removeEventListener('abort', onAbort);
      return true;
    };
    const fail = (e: Error): void => {
      if (!finish()) return;
      try {
        if (child.pid !== undefined) process.kill(-child.pid, 'SIGKILL');
      } catch {
        // Already gone.
      }
      child.stdout.destroy();
      child.stderr.destroy();
      reject(e);
    };
    const onAbort = (): void => fail(aborted(`credential helper ${program}: aborted`));
    options.signal?.addEventListener('abort', onAbort, { once: true });
    const timer = setTimeout(
      () => fail(deadlineExceeded(`credential helper ${program} did not answer within ${timeoutMs} ms`)),
      timeoutMs,
    );
    child.stdout.on('data', (b: Buffer) => {
      outBytes += b.length;
      if (outBytes > MAX_HELPER_OUTPUT) fail(unavailable(`credential helper ${program}: output too large`));
      else out.push(b);
    });
    child.stderr.on('data', (b: Buffer) => {
      if (err.length < 16) err.push(b);
    });
    // A helper that exits without reading stdin makes the write fail with EPIPE; the exit code tells.
    child.stdin.on('error', () => {});
    child.stdin.end(serverUrl);
    child.on('error', (e: NodeJS.ErrnoException) => {
      if (e.code === 'ENOENT') fail(failedPrecondition(`credential helper ${program} not found in PATH`));
      else fail(unavailable(`credential helper ${program}: ${e.message}`, { cause: e }));
    });
    child.on('close', (code) => {
      if (!finish()) return;
      const stdout = Buffer.concat(out).toString('utf8');
      if (code !== 0) {
        if (/credentials not found/i.test(stdout)) return resolve(undefined);
        const why = (stdout.trim() || Buffer.concat(err).toString('utf8').trim()).slice(0, 200);
        return reject(unavailable(`credential helper ${program} failed for ${host} (exit ${code}): ${why}`));
      }
      let parsed: unknown;
      try {
        parsed = JSON.parse(stdout);
      } catch {
        return reject(unavailable(`credential helper ${program} returned invalid JSON for ${host}`));
      }
      if (!isObject(parsed) || typeof parsed.Secret !== 'string') {
        return reject(unavailable(`credential helper ${program} returned no Secret for ${host}`));
      }
      const username = typeof parsed.Username === 'string' ? parsed.Username : '';
      if (parsed.Secret === '') return resolve(undefined);
      if (username === '<token>') return resolve({ kind: 'identityToken', token: parsed.Secret });
      resolve({ kind: 'basic', username, password: parsed.Secret });
    });
  });
}

export interface DockerConfigCredentialsOptions {
  /** The config.json to read; default `$DOCKER_CONFIG/config.json` or `~/.docker/config.json`. */
  path?: string;
  /** Environment for the helpers (PATH) and for the default path. */
  env?: NodeJS.ProcessEnv;
  helperTimeoutMs?: number;
  /** How long a helper's answer is reused; helpers are processes, too slow to run per request. */
  helperCacheMs?: number;
  /**
   * Told once about a version of the file that does not parse. With it, the credentials read before stay
   * in use (a bad edit must not fail every pull); without it, the error is thrown to the caller.
   */
  onReloadError?: (err: unknown) => void;
  onReload?: () => void;
  /**
   * Look at the file on every use (default true). false: once read, it is read again only by refresh()
   * (a facade reloading on SIGHUP alone).
   */
  checkOnUse?: boolean;
}

interface FileState {
  key: string;
  config: DockerConfig;
}

/**
 * A CredentialStore over a Docker config.json, re-read whenever the file's mtime, ctime, size or inode
 * change.
 */
export class DockerConfigCredentials implements CredentialStore {
  readonly path: string;
  private readonly env: NodeJS.ProcessEnv;
  private readonly helperTimeoutMs: number;
  private readonly helperCacheMs: number;
  private state: FileState | undefined;
  /** The version of the file last refused, so it is reported once. */
  private badKey = '';
  private readonly onReloadError: ((err: unknown) => void) | undefined;
  private readonly onReload: (() => void) | undefined;
  private readonly checkOnUse: boolean;
  private readonly helperCache = new Map<string, { at: number; value: Credentials | undefined }>();

  constructor(options: DockerConfigCredentialsOptions = {}) {
    this.env = options.env ?? process.env;
    this.path = options.path ?? defaultDockerConfigPath(this.env);
    this.helperTimeoutMs = options.helperTimeoutMs ?? 10_000;
    this.helperCacheMs = options.helperCacheMs ?? 30_000;
    this.onReloadError = options.onReloadError;
    this.onReload = options.onReload;
    this.checkOnUse = options.checkOnUse !== false;
  }

  /** The parsed file as it is now (empty when it does not exist), or as last read (checkOnUse false). */
  async config(): Promise<DockerConfig> {
    if (this.state && !this.checkOnUse) return this.state.config;
    return this.refresh();
  }

  /** Reads the file again if it changed; a bad version is reported (onReloadError) and the old one stays. */
  async refresh(): Promise<DockerConfig> {
    let key: string;
    try {
      const st = await stat(this.path, { bigint: true });
      // ctime too: an edit refused as unreadable is read again once its mode or owner is fixed.
      key = `${st.ino}:${st.size}:${st.mtimeNs}:${st.ctimeNs}`;
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'ENOENT')
        throw unavailable(`${this.path}: ${messageOf(err)}`);
      key = 'absent';
    }
    if (this.state?.key !== key && !(this.state && key === this.badKey)) {
      let config: DockerConfig;
      try {
        config =
          key === 'absent'
            ? { auths: new Map(), credHelpers: new Map() }
            : parseDockerConfig(await readFile(this.path, 'utf8'), this.path);
      } catch (err) {
        if (!this.state || !this.onReloadError) throw err;
        this.badKey = key;
        this.onReloadError(err);
        return this.state.config;
      }
      const reloaded = this.state !== undefined;
      this.state = { key, config };
      this.badKey = '';
      this.helperCache.clear();
      if (reloaded) this.onReload?.();
    }
    return this.state.config;
  }

  async get(host: string, signal?: AbortSignal): Promise<Credentials | undefined> {
    const h = canonicalHost(host);
    const config = await this.config();
    const helper = config.credHelpers.get(h) ?? config.credsStore;
    if (helper) {
      const fromHelper = await this.fromHelper(helper, h, signal);
      if (fromHelper) return fromHelper;
    }
    const entry = config.auths.get(h);
    if (entry instanceof Error) throw entry;
    return entry;
  }

  private async fromHelper(
    name: string,
    host: string,
    signal?: AbortSignal,
  ): Promise<Credentials | undefined> {
    const cacheKey = `${name}\n${host}`;
    const hit = this.helperCache.get(cacheKey);
    if (hit && Date.now() - hit.at < this.helperCacheMs) return hit.value;
    const value = await runCredentialHelper(name, host, {
      env: this.env,
      timeoutMs: this.helperTimeoutMs,
      signal,
    });
    this.helperCache.delete(cacheKey);
    if (this.helperCache.size >= HELPER_CACHE_ENTRIES) {
      this.helperCache.delete(this.helperCache.keys().next().value as string);
    }
    this.helperCache.set(cacheKey, { at: Date.now(), value });
    return value;
  }
}

function isObject(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}
