// Submodules of a build context, as Gitpod's workspace clone has them (`git submodule update --init
// --recursive` after the clone): each gitlink in the context is fetched at its pinned commit into the
// source's own git directory, its files take the gitlink's place in the listing (so the build key hashes
// their blob ids), and the checkout writes them into the gitlink's directory. Git's submodule machinery
// is not used: URLs come from .gitmodules at the built commit and pass the same remote policy as the
// source's own, and nesting and count are bounded.
import { realpath } from 'node:fs/promises';
import { join } from 'node:path';
import {
  deadlineExceeded,
  errorKind,
  failedPrecondition,
  invalidArgument,
  messageOf,
  resourceExhausted,
  StrataError,
} from '../errors.ts';
import type { ContextEntry } from './context-files.ts';
import type { GitRepo } from './git-source.ts';

/** A submodule checked out with a build's context. */
export interface Submodule {
  /** Where it sits, from the superproject's root (nested ones below their parent's path). */
  path: string;
  commit: string;
  /** Its remote, relative URLs resolved. */
  uri: string;
  /** Why it is left empty, when the builder cannot speak its remote's protocol. */
  skipped?: string;
}

export const GITLINK = '160000';
/** Nesting below the superproject (git itself has no bound). */
export const MAX_SUBMODULE_DEPTH = 8;
/** Submodules of one build, nested ones counted. */
export const MAX_SUBMODULES = 64;

/**
 * A submodule's URL as git resolves it: `./x` and `../x` are relative to the superproject's remote (each
 * `../` drops one path component of it), anything else stands as written.
 */
export function submoduleUri(url: string, superUri: string): string {
  if (!url.startsWith('./') && !url.startsWith('../')) return url;
  let base = superUri.replace(/\/+$/, '');
  const scheme = base.indexOf('://');
  const pathStart = scheme < 0 ? 0 : base.indexOf('/', scheme + 3);
  let rest = url;
  for (;;) {
    if (rest.startsWith('./')) rest = rest.slice(2);
    else if (rest.startsWith('../')) {
      const cut = base.lastIndexOf('/');
      if (pathStart < 0 || cut < pathStart) {
        throw invalidArgument(`relative URL ${JSON.stringify(url)} climbs above ${superUri}`);
      }
      base = base.slice(0, cut);
      rest = rest.slice(3);
    } else break;
  }
  return `${base}/${rest}`;
}

/**
 * Why a remote is left alone: ssh (and scp-like `user@host:path`) needs keys the builder does not hold.
 * Gitpod's clone fails on such a submodule and goes on without it, and so do builds here: the gitlink
 * stays an empty directory, keyed by its commit as before submodules were fetched.
 */
function unspoken(uri: string): string | undefined {
  if (/^(?:ssh|git\+ssh|ssh\+git):\/\//i.test(uri) || /^(?:[^@/:]+@)?[^/:]+:(?!\/\/)/.test(uri)) {
    return 'ssh remotes are not fetched by the builder (it holds no ssh keys)';
  }
  return undefined;
}

/** Errors already named after the submodule they are about (a nested one's stays the innermost's). */
const named = new WeakSet<object>();

function aboutSubmodule(path: string, err: unknown): unknown {
  if (err instanceof StrataError && named.has(err)) return err;
  const out = new StrataError(errorKind(err) ?? 'Internal', `submodule ${path}: ${messageOf(err)}`, {
    cause: err,
  });
  named.add(out);
  return out;
}

/** One pass over a source's submodules: the git timeout bounds each command and the pass as a whole. */
class Walk {
  readonly submodules: Submodule[] = [];
  readonly repo: GitRepo;
  readonly signal: AbortSignal | undefined;
  private readonly deadline: number;
  constructor(repo: GitRepo, signal: AbortSignal | undefined) {
    this.repo = repo;
    this.signal = signal;
    this.deadline = Date.now() + repo.options.timeoutMs;
  }

  /** What is left of the pass's time; refused once none is. */
  remaining(): number {
    const left = this.deadline - Date.now();
    if (left <= 0) {
      const s = Math.round(this.repo.options.timeoutMs / 1000);
      throw deadlineExceeded(`submodules not fetched within ${s} s`);
    }
    return left;
  }

  async fetch(module: Submodule): Promise<void> {
    const ref = `refs/strata/submodules/${this.submodules.length}`;
    await this.repo.fetchPinned(module.uri, module.commit, ref, this.signal, this.remaining());
  }

  /**
   * `entries` (listed under `dir` of the repository at `commit`, whose remote is `uri` and which sits at
   * `root` of the checkout) with each gitlink replaced by its submodule's files.
   */
  async expand(
    at: { commit: string; uri: string; root: string; dir: string },
    entries: readonly ContextEntry[],
    depth: number,
  ): Promise<ContextEntry[]> {
    const links = entries.filter((e) => e.mode === GITLINK);
    if (links.length === 0) return [...entries];
    const modules = await this.repo.gitmodules(at.commit, this.signal);
    const out = entries.filter((e) => e.mode !== GITLINK);
    for (const link of links) {
      const inRepo = at.dir === '' ? link.path : `${at.dir}/${link.path}`;
      const path = at.root === '' ? inRepo : `${at.root}/${inRepo}`;
      // `git submodule update --init` leaves these alone: an empty directory, keyed by its gitlink.
      if (modules.get(inRepo)?.update === 'none') {
        out.push(link);
        continue;
      }
      try {
        if (depth >= MAX_SUBMODULE_DEPTH) {
          throw failedPrecondition(`submodules are nested more than ${MAX_SUBMODULE_DEPTH} deep`);
        }
        if (this.submodules.length >= MAX_SUBMODULES) {
          throw resourceExhausted(`a build takes at most ${MAX_SUBMODULES} submodules`);
        }
        const url = modules.get(inRepo)?.url;
        if (url === undefined) throw failedPrecondition(`no URL for it in .gitmodules at ${at.commit}`);
        const module: Submodule = { path, commit: link.id, uri: submoduleUri(url, at.uri) };
        const skipped = unspoken(module.uri);
        if (skipped) {
          this.submodules.push({ ...module, skipped });
          out.push(link);
          continue;
        }
        await this.fetch(module);
        this.submodules.push(module);
        const inner = await this.repo.listTree(module.commit, '', this.signal);
        const files = await this.expand(
          { commit: module.commit, uri: module.uri, root: path, dir: '' },
          inner,
          depth + 1,
        );
        for (const e of files) out.push({ ...e, path: `${link.path}/${e.path}` });
      } catch (err) {
        throw aboutSubmodule(path, err);
      }
    }
    return out;
  }
}

/**
 * Fetches the submodules among `entries` (the listing of `dir` at `commit` of the source) and returns the
 * listing with their files in place of their gitlinks, and the submodules in checkout order.
 */
export async function withSubmodules(
  repo: GitRepo,
  commit: string,
  dir: string,
  entries: readonly ContextEntry[],
  signal?: AbortSignal,
): Promise<{ entries: ContextEntry[]; submodules: Submodule[] }> {
  if (!entries.some((e) => e.mode === GITLINK)) return { entries: [...entries], submodules: [] };
  const walk = new Walk(repo, signal);
  const expanded = await walk.expand({ commit, uri: repo.source.remoteUri, root: '', dir }, entries, 0);
  return { entries: expanded, submodules: walk.submodules };
}

/** Fetches submodules a plan listed into a fresh git directory (the build's, when planning's is gone). */
export async function fetchSubmodules(
  repo: GitRepo,
  submodules: readonly Submodule[],
  signal?: AbortSignal,
): Promise<void> {
  const walk = new Walk(repo, signal);
  for (const module of submodules) {
    if (module.skipped) continue;
    try {
      await walk.fetch(module);
      walk.submodules.push(module);
    } catch (err) {
      throw aboutSubmodule(module.path, err);
    }
  }
}

/** Writes each submodule's tree into its directory of the superproject's checkout at `workTree`. */
export async function checkoutSubmodules(
  repo: GitRepo,
  submodules: readonly Submodule[],
  workTree: string,
  signal?: AbortSignal,
): Promise<void> {
  const root = await realpath(workTree);
  for (const [i, module] of submodules.entries()) {
    if (module.skipped) continue;
    const dir = join(root, module.path);
    // The superproject's checkout made the gitlink a plain directory; nothing on the way may be a link.
    if ((await realpath(dir).catch(() => undefined)) !== dir) {
      throw failedPrecondition(`submodule ${module.path}: its directory is missing from the checkout`);
    }
    await repo.checkout(module.commit, dir, signal, `index-submodule-${i}`);
  }
}
