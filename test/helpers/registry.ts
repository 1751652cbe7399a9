// A real CNCF distribution registry (Debian's docker-registry 2.8) for tests: filesystem storage in a
// temp dir, 127.0.0.1 on a free port, deletes enabled, and no auth, htpasswd (bcrypt) or bearer tokens
// from our token server.
import { randomBytes } from 'node:crypto';
import { mkdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { stringify } from 'yaml';
import { freePort } from './ports.ts';
import { type AfterHook, runCommand, spawnServer } from './process.ts';
import { Cleanup, tempDir } from './tmp.ts';
import { type GrantPolicy, startTokenServer, type TokenServer } from './token-server.ts';

export type RegistryAuth =
  | { mode: 'none' }
  | { mode: 'basic'; users: Record<string, string> }
  | {
      mode: 'token';
      users: Record<string, string>;
      /** Anonymous token requests get pull on every repository (default false). */
      anonymousPull?: boolean;
      /** Token lifetime in seconds (default 300). The registry itself allows 60 s of leeway past expiry. */
      expiresIn?: number;
      /** Replaces the default grant policy (users get what they ask for). */
      policy?: GrantPolicy;
    };

export interface TestRegistry {
  /** `127.0.0.1:PORT`, as used in image references. */
  host: string;
  /** `http://127.0.0.1:PORT`. */
  url: string;
  auth: RegistryAuth;
  /** Present in token mode. */
  tokenServer?: TokenServer;
  /** The first configured user, for tools that take one set of credentials. */
  creds?: { username: string; password: string };
  /** The registry's temp dir (config, htpasswd, storage, log). */
  dir: string;
  /** The registry's stdout/stderr. */
  logFile: string;
  /** The registry process's id (a new one after restart). */
  readonly pid: number;
  /** Stops the registry (and token server) and removes its temp dirs. Idempotent. */
  stop(): Promise<void>;
  /** Kills the registry process at once (SIGKILL), as a crash would; its storage stays. */
  kill(): Promise<void>;
  /** Starts the registry again on the same address and storage (after kill). */
  restart(): Promise<void>;
  /**
   * Writes a docker config.json with an `auths` entry for this host (first user; empty auths without
   * users) into `dir` (a fresh temp dir removed by stop() when omitted) and returns the directory, ready
   * for DOCKER_CONFIG.
   */
  dockerConfig(dir?: string): Promise<string>;
}

export interface StartRegistryOptions {
  auth?: RegistryAuth;
  /**
   * Layer URLs (`urls`) the registry accepts in a pushed manifest, as regular expressions
   * (`validation.manifests.urls.allow`). Unset: docker-registry's default, which accepts none.
   */
  allowManifestUrls?: string[];
  /** When given, stop() runs after the test, pass or fail. */
  t?: AfterHook;
}

const REALM = 'strata-test-registry';

/** Starts a registry and waits until /v2/ answers. */
export async function startRegistry(opts: StartRegistryOptions = {}): Promise<TestRegistry> {
  const auth: RegistryAuth = opts.auth ?? { mode: 'none' };
  const cleanup = new Cleanup();
  opts.t?.after(() => cleanup.run());
  try {
    return await start(auth, cleanup, opts.allowManifestUrls);
  } catch (err) {
    await cleanup.run().catch(() => {});
    throw err;
  }
}

async function start(
  auth: RegistryAuth,
  cleanup: Cleanup,
  allowManifestUrls: string[] | undefined,
): Promise<TestRegistry> {
  const dir = await tempDir('registry');
  cleanup.addDir(dir);
  const storage = join(dir, 'storage');
  await mkdir(storage);
  const logFile = join(dir, 'registry.log');

  let authConfig: Record<string, unknown> | undefined;
  let tokenServer: TokenServer | undefined;
  if (auth.mode === 'basic') {
    const htpasswd = join(dir, 'htpasswd');
    const lines: string[] = [];
    for (const [user, password] of Object.entries(auth.users)) {
      // -i reads the password from stdin so it never shows in a process listing.
      lines.push(
        (await runCommand('htpasswd', ['-niB', user], { input: password, timeoutMs: 30_000 })).trim(),
      );
    }
    await writeFile(htpasswd, `${lines.join('\n')}\n`, { mode: 0o600 });
    authConfig = { htpasswd: { realm: REALM, path: htpasswd } };
  } else if (auth.mode === 'token') {
    const ts = await startTokenServer({
      users: auth.users,
      dir,
      service: REALM,
      anonymousPull: auth.anonymousPull,
      expiresIn: auth.expiresIn,
      policy: auth.policy,
    });
    tokenServer = ts;
    cleanup.add(() => ts.stop());
    authConfig = {
      token: { realm: ts.realm, service: ts.service, issuer: ts.issuer, rootcertbundle: ts.certFile },
    };
  }

  // The port is free when picked but could be taken before the registry binds it: retry a few times.
  for (let attempt = 1; ; attempt++) {
    const port = await freePort();
    const host = `127.0.0.1:${port}`;
    const config = {
      version: 0.1,
      log: { level: 'warn', formatter: 'text', accesslog: { disabled: true } },
      storage: {
        filesystem: { rootdirectory: storage },
        delete: { enabled: true },
        maintenance: { uploadpurging: { enabled: false } },
      },
      http: {
        addr: host,
        secret: randomBytes(16).toString('hex'),
        headers: { 'X-Content-Type-Options': ['nosniff'] },
      },
      health: { storagedriver: { enabled: false } },
      ...(authConfig ? { auth: authConfig } : {}),
      ...(allowManifestUrls ? { validation: { manifests: { urls: { allow: allowManifestUrls } } } } : {}),
    };
    const configFile = join(dir, 'config.yml');
    await writeFile(configFile, stringify(config));
    const url = `http://${host}`;
    const serve = () =>
      spawnServer('docker-registry', ['serve', configFile], {
        name: `docker-registry on ${host}`,
        logFile,
        timeoutMs: 20_000,
        readyCheck: async () => {
          const res = await fetch(`${url}/v2/`, { signal: AbortSignal.timeout(2000) });
          await res.body?.cancel();
          return res.status === 200 || res.status === 401;
        },
      });
    try {
      let server = await serve();
      cleanup.add(() => server.stop());
      const users = auth.mode === 'none' ? {} : auth.users;
      const first = Object.entries(users)[0];
      const creds = first ? { username: first[0], password: first[1] } : undefined;
      return {
        host,
        url,
        auth,
        tokenServer,
        creds,
        dir,
        logFile,
        get pid() {
          return server.proc.pid!;
        },
        stop: () => cleanup.run(),
        kill: async () => {
          const exited = new Promise((r) => {
            if (server.proc.exitCode !== null || server.proc.signalCode !== null) r(undefined);
            else server.proc.once('exit', r);
          });
          server.proc.kill('SIGKILL');
          await exited;
        },
        restart: async () => {
          server = await serve();
        },
        dockerConfig: async (target?: string) => {
          let configDir = target;
          if (configDir === undefined) {
            configDir = await tempDir('docker-config');
            cleanup.addDir(configDir);
          }
          const auths = creds
            ? { [host]: { auth: Buffer.from(`${creds.username}:${creds.password}`).toString('base64') } }
            : {};
          await writeFile(join(configDir, 'config.json'), `${JSON.stringify({ auths }, null, 2)}\n`, {
            mode: 0o600,
          });
          return configDir;
        },
      };
    } catch (err) {
      const inUse = /address already in use/i.test(String(err));
      if (!inUse || attempt >= 3) throw err;
    }
  }
}
