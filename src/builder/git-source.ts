// A build context from a git repository, through the git CLI: the commit a clone target names
// (ls-remote, no clone), a shallow fetch of that one commit into a private git directory, the tree's
// files with their blob ids (the build key hashes those, so no file is read twice), single files, and a
// checkout without .git for buildah. Nothing of the host's git configuration is read; credentials travel
// in the environment, never on a command line, and so do the builder's proxy settings; only the allowed
// protocols are spoken. Submodules' commits
// are fetched into the same git directory (git-submodules.ts decides which). The git directory may be
// bounded in size: git has no such limit for a fetch, so the directory is measured while git writes it.
import { lstat, mkdir, readdir } from 'node:fs/promises';
import { join, posix } from 'node:path';
import {
  errorKind,
  failedPrecondition,
  invalidArgument,
  notFound,
  resourceExhausted,
  unavailable,
} from '../errors.ts';
import { CommandFailed, runCommand } from './command.ts';
import type { ContextEntry } from './context-files.ts';
import { gitProxyVariables, type ProxyVariables } from './proxy-env.ts';

export type CloneTargetMode = 'remoteHead' | 'remoteCommit' | 'remoteBranch' | 'localBranch';

export interface GitSource {
  remoteUri: string;
  targetMode: CloneTargetMode;
  /** A commit, a branch, or nothing, depending on targetMode. */
  cloneTarget: string;
  /** Where the repository sits under the workspace root ('' or '.' for the root). */
  checkoutLocation: string;
  fullClone: boolean;
  auth?: { username: string; password: string };
}

export interface GitOptions {
  /** Let file:// remotes be cloned (they read the builder's own disk). */
  allowFileRemotes: boolean;
  timeoutMs: number;
  /**
   * Bytes the git directory may hold (the source's objects with its submodules'): a fetch that passes it
   * is stopped and fails. It is measured every SIZE_CHECK_MS while git runs, so git may write what it
   * receives in that time beyond it, and once more when git is done.
   */
  maxBytes?: number;
  /** Proxy variables (see proxy-env.ts) for git's HTTP requests; none by default. */
  proxy?: ProxyVariables;
}

const SIZE_CHECK_MS = 250;

/** Bytes of the files under `dir`; one that goes while it is read (git renames as it works) counts as gone. */
export async function dirBytes(dir: string): Promise<number> {
  const entries = await readdir(dir, { recursive: true, withFileTypes: true }).catch(() => []);
  let total = 0;
  for (const e of entries) {
    if (e.isFile()) total += (await lstat(join(e.parentPath, e.name)).catch(() => undefined))?.size ?? 0;
  }
  return total;
}

const FULL_SHA_RE = /^(?:[0-9a-f]{40}|[0-9a-f]{64})$/;
const SHORT_SHA_RE = /^[0-9a-f]{4,64}$/;
const REMOTE_PROTOCOLS = new Set(['http:', 'https:', 'git:', 'file:']);

/** Checks a remote URI: a URL of an allowed protocol, with no credentials in it. */
export function checkRemoteUri(uri: string, allowFile: boolean): URL {
  let url: URL;
  try {
    url = new URL(uri);
  } catch {
    throw invalidArgument(`git remote ${JSON.stringify(uri)} is not a URL (http, https, git or file)`);
  }
  if (!REMOTE_PROTOCOLS.has(url.protocol)) {
    throw invalidArgument(
      `git remote protocol ${url.protocol.slice(0, -1)} is not supported (http, https, git, file)`,
    );
  }
  if (url.protocol === 'file:' && !allowFile) {
    throw failedPrecondition('file:// git remotes are disabled on this builder');
  }
  if (url.username || url.password) {
    throw invalidArgument('git remote must not carry credentials; use the initializer config instead');
  }
  return url;
}

/**
 * A path of the workspace (dockerfile_path, context_path) as a path inside the repository. Gitpod's
 * callers prefix `/workspace`; paths are relative to the workspace root, which holds the checkout at
 * checkout_location. Escapes are refused.
 */
export function repoPath(workspacePath: string, checkoutLocation: string, what: string): string {
  const strip = (p: string) => p.replace(/^\/workspace(?=\/|$)/, '').replace(/^\/+/, '');
  const norm = (p: string) => {
    const n = posix.normalize(strip(p) || '.');
    if (n === '..' || n.startsWith('../'))
      throw invalidArgument(`${what} ${JSON.stringify(workspacePath)} leaves the workspace`);
    return n === '.' ? '' : n.replace(/\/$/, '');
  };
  const path = norm(workspacePath);
  const checkout = norm(checkoutLocation);
  if (checkout === '') return path;
  if (path === checkout) return '';
  if (!path.startsWith(`${checkout}/`)) {
    throw invalidArgument(
      `${what} ${JSON.stringify(workspacePath)} is outside the checkout location ${checkoutLocation}`,
    );
  }
  return path.slice(checkout.length + 1);
}

function refName(source: GitSource): string {
  switch (source.targetMode) {
    case 'remoteBranch':
      if (source.cloneTarget === '') throw invalidArgument('REMOTE_BRANCH needs a branch in clone_taget');
      return `refs/heads/${source.cloneTarget}`;
    default:
      return 'HEAD';
  }
}

/** A private git directory for one source. */
export class GitRepo {
  readonly gitDir: string;
  readonly source: GitSource;
  readonly options: GitOptions;
  private readonly url: URL;
  private readonly proxy: ProxyVariables;

  private constructor(gitDir: string, source: GitSource, options: GitOptions) {
    this.gitDir = gitDir;
    this.source = source;
    this.options = options;
    this.url = checkRemoteUri(source.remoteUri, options.allowFileRemotes);
    this.proxy = gitProxyVariables(options.proxy ?? {});
  }

  /** Checks the source; `gitDir` is created on first fetch. */
  static open(gitDir: string, source: GitSource, options: GitOptions): GitRepo {
    return new GitRepo(gitDir, source, options);
  }

  /**
   * The source's credentials go only to its own origin (scheme, host and port): a submodule on another
   * host, or over plain http when the source is https, gets none.
   */
  private sendsAuthTo(remote: URL): boolean {
    const http = remote.protocol === 'https:' || remote.protocol === 'http:';
    return this.source.auth !== undefined && http && remote.origin === this.url.origin;
  }

  private env(call: GitCall): NodeJS.ProcessEnv {
    const env: NodeJS.ProcessEnv = {
      ...this.proxy,
      PATH: process.env.PATH ?? '/usr/bin:/bin',
      HOME: this.gitDir,
      GIT_CONFIG_NOSYSTEM: '1',
      GIT_CONFIG_GLOBAL: '/dev/null',
      GIT_TERMINAL_PROMPT: '0',
      GIT_ASKPASS: '/bin/false',
      GIT_PROTOCOL_FROM_USER: '0',
      LC_ALL: 'C',
    };
    const config: Array<[string, string]> = [
      ['protocol.allow', 'never'],
      ['protocol.http.allow', 'always'],
      ['protocol.https.allow', 'always'],
      ['protocol.git.allow', 'always'],
      ['protocol.file.allow', this.options.allowFileRemotes ? 'always' : 'never'],
      ['core.autocrlf', 'false'],
      ['core.hooksPath', '/dev/null'],
      ['advice.detachedHead', 'false'],
      // Submodules are fetched one by one by the builder, with this same policy; git never recurses itself.
      ['submodule.recurse', 'false'],
      ['fetch.recurseSubmodules', 'false'],
    ];
    const auth = this.source.auth;
    if (auth && this.sendsAuthTo(call.remote?.url ?? this.url)) {
      const basic = Buffer.from(`${auth.username}:${auth.password}`).toString('base64');
      config.push(['http.extraHeader', `Authorization: Basic ${basic}`]);
    }
    env.GIT_CONFIG_COUNT = String(config.length);
    config.forEach(([k, v], i) => {
      env[`GIT_CONFIG_KEY_${i}`] = k;
      env[`GIT_CONFIG_VALUE_${i}`] = v;
    });
    if (call.indexFile !== undefined) env.GIT_INDEX_FILE = join(this.gitDir, call.indexFile);
    return env;
  }

  private async git(
    args: string[],
    signal?: AbortSignal,
    maxStdout?: number,
    call: GitCall = {},
  ): Promise<string> {
    try {
      const r = await runCommand('git', args, {
        env: this.env(call),
        timeoutMs: call.timeoutMs ?? this.options.timeoutMs,
        ...(signal && { signal }),
        ...(maxStdout !== undefined && { maxStdout }),
      });
      return r.stdout;
    } catch (err) {
      if (err instanceof CommandFailed) {
        throw unavailable(
          `git ${args[0] === '--git-dir' ? args[2] : args[0]} of ${call.remote?.uri ?? this.source.remoteUri} failed: ${redact(err.tail)}`,
        );
      }
      throw err;
    }
  }

  private dir(...args: string[]): string[] {
    return ['--git-dir', this.gitDir, ...args];
  }

  /** The commit the clone target names, without fetching (ls-remote for heads and branches). */
  async resolveCommit(signal?: AbortSignal): Promise<string | undefined> {
    const target = this.source.cloneTarget.toLowerCase();
    if (this.source.targetMode === 'remoteCommit') {
      if (!SHORT_SHA_RE.test(target))
        throw invalidArgument(
          `REMOTE_COMMIT needs a commit id, not ${JSON.stringify(this.source.cloneTarget)}`,
        );
      // An abbreviated id is only known once the history is there.
      return FULL_SHA_RE.test(target) ? target : undefined;
    }
    const ref = refName(this.source);
    const out = await this.git(['ls-remote', '--', this.source.remoteUri, ref], signal);
    const line = out.split('\n').find((l) => l.endsWith(`\t${ref}`));
    if (!line)
      throw notFound(
        `${this.source.remoteUri} has no ${ref === 'HEAD' ? 'HEAD' : `branch ${this.source.cloneTarget}`}`,
      );
    return line.split('\t')[0];
  }

  private fetchFrom(
    uri: string,
    extra: string[],
    what: string[],
    signal?: AbortSignal,
    call?: GitCall,
  ): Promise<string> {
    const args = ['fetch', '--quiet', '--no-tags', '--no-write-fetch-head', ...extra, '--', uri, ...what];
    return this.bounded(uri, signal, (s) => this.git(this.dir(...args), s, undefined, call));
  }

  /** Runs `run` (a command that writes into the git directory), stopped once the directory passes maxBytes. */
  private async bounded<T>(
    uri: string,
    signal: AbortSignal | undefined,
    run: (signal: AbortSignal | undefined) => Promise<T>,
  ): Promise<T> {
    const max = this.options.maxBytes;
    if (max === undefined) return run(signal);
    const tooLarge = () =>
      resourceExhausted(
        `${uri} is larger than this builder takes: its git objects passed ${max} bytes (repositoryMax)`,
      );
    const over = new AbortController();
    let measuring = false;
    const timer = setInterval(() => {
      if (measuring) return;
      measuring = true;
      void dirBytes(this.gitDir)
        .then((n) => n > max && over.abort())
        .finally(() => {
          measuring = false;
        });
    }, SIZE_CHECK_MS);
    try {
      const result = await run(signal ? AbortSignal.any([signal, over.signal]) : over.signal);
      // A fetch quicker than one check.
      if ((await dirBytes(this.gitDir)) > max) throw tooLarge();
      return result;
    } catch (err) {
      throw over.signal.aborted && !signal?.aborted ? tooLarge() : err;
    } finally {
      clearInterval(timer);
    }
  }

  /** Fetches the commit (shallow unless full_clone) and returns its full id. */
  async fetch(commit: string | undefined, signal?: AbortSignal): Promise<string> {
    await mkdir(this.gitDir, { recursive: true });
    await this.git(['init', '--quiet', '--bare', this.gitDir], signal);
    const depth = this.source.fullClone ? [] : ['--depth=1'];
    const fetch = (what: string, extra: string[] = depth) =>
      this.fetchFrom(this.source.remoteUri, extra, [what], signal);
    const wanted = this.source.targetMode === 'remoteCommit' ? this.source.cloneTarget.toLowerCase() : commit;
    if (wanted !== undefined && FULL_SHA_RE.test(wanted)) {
      try {
        await fetch(`${wanted}:refs/strata/build`);
        return wanted;
      } catch (err) {
        // Servers that refuse unadvertised ids: fetch what they advertise and find the commit in it.
        if (errorKind(err) === 'ResourceExhausted') throw err;
      }
    }
    if (this.source.targetMode === 'remoteCommit') {
      await fetch('+refs/heads/*:refs/remotes/origin/*', []);
      return (
        await this.git(
          this.dir('rev-parse', '--verify', '--quiet', `${this.source.cloneTarget}^{commit}`),
          signal,
        ).catch(() => {
          throw notFound(`commit ${this.source.cloneTarget} is not in ${this.source.remoteUri}`);
        })
      ).trim();
    }
    await fetch(`+${refName(this.source)}:refs/strata/build`);
    return (await this.git(this.dir('rev-parse', '--verify', 'refs/strata/build^{commit}'), signal)).trim();
  }

  /** Every file under `dir` (repository-relative, '' for the root) at `commit`, relative to `dir`. */
  async listTree(commit: string, dir: string, signal?: AbortSignal): Promise<ContextEntry[]> {
    const args = this.dir('ls-tree', '-r', '-z', '--full-tree', commit);
    if (dir !== '') args.push('--', `${dir}/`);
    const out = await this.git(args, signal, 256 << 20);
    const entries: ContextEntry[] = [];
    for (const rec of out.split('\0')) {
      if (rec === '') continue;
      const tab = rec.indexOf('\t');
      const [mode, , id] = rec.slice(0, tab).split(' ') as [string, string, string];
      const path = rec.slice(tab + 1);
      entries.push({ path: dir === '' ? path : path.slice(dir.length + 1), mode, id });
    }
    return entries;
  }

  /**
   * Bytes a checkout of `commit` writes: its files' sizes as stored (symlinks their target's length;
   * submodules, gitlinks here, not counted).
   */
  async treeBytes(commit: string, signal?: AbortSignal): Promise<number> {
    const out = await this.git(
      this.dir('ls-tree', '-r', '-l', '-z', '--full-tree', commit),
      signal,
      256 << 20,
    );
    let total = 0;
    for (const rec of out.split('\0')) {
      const size = Number(rec.slice(0, rec.indexOf('\t')).split(' ').at(-1));
      if (Number.isFinite(size)) total += size;
    }
    return total;
  }

  /** The tree entry at `path` (no symlink followed): mode, type and object id; undefined when absent. */
  async entry(
    commit: string,
    path: string,
    signal?: AbortSignal,
  ): Promise<{ mode: string; type: string; id: string } | undefined> {
    const out = await this.git(this.dir('ls-tree', '-z', '--full-tree', commit, '--', path), signal);
    const rec = out.split('\0')[0];
    if (!rec) return undefined;
    const [mode, type, id] = rec.slice(0, rec.indexOf('\t')).split(' ') as [string, string, string];
    return { mode, type, id };
  }

  /**
   * `path` at `commit` with every symlink on the way followed (a checkout resolves them so, and so does
   * buildah); links that leave the repository are refused. Absent components are kept as written.
   */
  async resolvePath(commit: string, path: string, signal?: AbortSignal): Promise<string> {
    let done: string[] = [];
    const rest = path.split('/').filter((p) => p !== '');
    for (let hops = 0; rest.length > 0; ) {
      const name = rest.shift() as string;
      const here = [...done, name].join('/');
      const e = await this.entry(commit, here, signal);
      if (!e) return [here, ...rest].join('/');
      if (e.mode !== '120000') {
        done.push(name);
        continue;
      }
      if (++hops > 8) throw invalidArgument(`${path}: too many levels of symbolic links`);
      const text = (await this.readBlob(e.id, signal, 4096, here)).toString('utf8');
      const target = posix.normalize(posix.join(done.join('/') || '.', text));
      if (posix.isAbsolute(text) || target === '..' || target.startsWith('../')) {
        throw invalidArgument(`${path} goes through a symlink that leaves the repository`);
      }
      done = target === '.' ? [] : target.split('/');
    }
    return done.join('/');
  }

  /** A file's bytes at `commit`, following symlinks inside the repository; undefined when absent. */
  async readFile(
    commit: string,
    path: string,
    signal?: AbortSignal,
    maxBytes = 1 << 20,
  ): Promise<Buffer | undefined> {
    const e = await this.entry(commit, await this.resolvePath(commit, path, signal), signal);
    if (e?.type !== 'blob') return undefined;
    return this.readBlob(e.id, signal, maxBytes, path);
  }

  /** A blob's bytes (text: runCommand decodes UTF-8), refused past `maxBytes`. */
  async readBlob(id: string, signal?: AbortSignal, maxBytes = 1 << 20, what = id): Promise<Buffer> {
    try {
      return Buffer.from(await this.git(this.dir('cat-file', 'blob', id), signal, maxBytes), 'utf8');
    } catch (err) {
      if (errorKind(err) === 'ResourceExhausted')
        throw invalidArgument(`${what} is larger than ${maxBytes} bytes`);
      throw err;
    }
  }

  /**
   * Writes the tree of `commit` into `workTree` (no .git there). `indexFile` (under the git directory)
   * keeps a submodule's checkout from sharing the superproject's index.
   */
  async checkout(commit: string, workTree: string, signal?: AbortSignal, indexFile?: string): Promise<void> {
    await mkdir(workTree, { recursive: true });
    await this.git(
      [
        '--git-dir',
        this.gitDir,
        '--work-tree',
        workTree,
        'checkout',
        '--quiet',
        '--force',
        '--detach',
        commit,
      ],
      signal,
      undefined,
      indexFile === undefined ? {} : { indexFile },
    );
  }

  /**
   * Fetches `commit` of another remote (a submodule's, checked as the source's own is) into this git
   * directory under `ref`: shallow by id, else, from servers that refuse unadvertised ids, their branches
   * and tags in full.
   */
  async fetchPinned(
    uri: string,
    commit: string,
    ref: string,
    signal?: AbortSignal,
    timeoutMs?: number,
  ): Promise<void> {
    const call: GitCall = {
      remote: { uri, url: checkRemoteUri(uri, this.options.allowFileRemotes) },
      ...(timeoutMs !== undefined && { timeoutMs }),
    };
    const fetch = (extra: string[], ...what: string[]) => this.fetchFrom(uri, extra, what, signal, call);
    try {
      await fetch(['--depth=1'], `${commit}:${ref}`);
      return;
    } catch (err) {
      if (errorKind(err) !== 'Unavailable') throw err;
    }
    await fetch([], `+refs/heads/*:${ref}/heads/*`, `+refs/tags/*:${ref}/tags/*`);
    await this.git(this.dir('cat-file', '-e', `${commit}^{commit}`), signal, undefined, call).catch(() => {
      throw notFound(`commit ${commit} is not in ${uri}`);
    });
  }

  /** The submodules the .gitmodules file at `commit` describes, by path (none without one). */
  async gitmodules(commit: string, signal?: AbortSignal): Promise<Map<string, GitmodulesEntry>> {
    const file = await this.entry(commit, '.gitmodules', signal);
    const out = new Map<string, GitmodulesEntry>();
    if (file?.type !== 'blob') return out;
    // git's own parser; a blob is read without following include directives.
    const text = await this.git(this.dir('config', '-z', '--blob', file.id, '--list'), signal, 1 << 20);
    const byName = new Map<string, GitmodulesEntry & { path?: string }>();
    for (const rec of text.split('\0')) {
      const nl = rec.indexOf('\n');
      const m = /^submodule\.(.+)\.(path|url|update)$/.exec(nl < 0 ? rec : rec.slice(0, nl));
      if (!m || nl < 0) continue;
      const [, name, field] = m as unknown as [string, string, 'path' | 'url' | 'update'];
      const module = byName.get(name) ?? {};
      module[field] = rec.slice(nl + 1);
      byName.set(name, module);
    }
    for (const { path, ...rest } of byName.values()) {
      if (path !== undefined) out.set(posix.normalize(path).replace(/\/$/, ''), rest);
    }
    return out;
  }
}

export interface GitmodulesEntry {
  url?: string;
  /** `none` keeps `git submodule update` from checking it out. */
  update?: string;
}

interface GitCall {
  /** The remote the command talks to, when not the source's own (for messages and credentials). */
  remote?: { uri: string; url: URL };
  /** The index file, relative to the git directory, when not the default. */
  indexFile?: string;
  timeoutMs?: number;
}

/** Strips anything that looks like credentials in a URL from git's messages. */
function redact(text: string): string {
  return text.replace(/\/\/[^/@\s]*@/g, '//***@');
}
