// Git repositories for builder tests: a work tree on disk committed with the git CLI (file:// remote),
// optionally served read-only by `git daemon` on 127.0.0.1 (git:// remote).
import { mkdir, rm, writeFile } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { freePort, isListening } from './ports.ts';
import { type AfterHook, runCommand, spawnServer } from './process.ts';

export interface TestRepo {
  /** The repository's work tree (also its file:// remote). */
  dir: string;
  url: string;
  /** Writes (or, for null, removes) files and commits; returns the commit id. */
  commit(files: Record<string, string | null>, message?: string): Promise<string>;
  head(): Promise<string>;
  /** Stages a submodule at `path` pinned to `commit` (its directory left empty); commit() records it. */
  gitlink(path: string, commit: string): Promise<void>;
}

export async function createRepo(dir: string): Promise<TestRepo> {
  await mkdir(dir, { recursive: true });
  const git = (...args: string[]) =>
    runCommand('git', ['-C', dir, '-c', 'user.name=strata', '-c', 'user.email=test@strata', ...args], {
      env: { GIT_CONFIG_NOSYSTEM: '1', GIT_CONFIG_GLOBAL: '/dev/null' },
    });
  await git('init', '--quiet', '--initial-branch', 'main');
  // Lets git daemon serve it without a magic file.
  await writeFile(join(dir, '.git', 'git-daemon-export-ok'), '');
  return {
    dir,
    url: `file://${dir}`,
    async commit(files, message = 'change') {
      for (const [path, text] of Object.entries(files)) {
        const full = join(dir, path);
        if (text === null) await rm(full, { force: true });
        else {
          await mkdir(dirname(full), { recursive: true });
          await writeFile(full, text);
        }
      }
      await git('add', '--all');
      await git('commit', '--quiet', '--allow-empty', '-m', message);
      return (await git('rev-parse', 'HEAD')).trim();
    },
    async head() {
      return (await git('rev-parse', 'HEAD')).trim();
    },
    async gitlink(path, commit) {
      // An empty directory is how an unpopulated submodule looks: `add --all` keeps its gitlink.
      await mkdir(join(dir, path), { recursive: true });
      await git('update-index', '--add', '--cacheinfo', `160000,${commit},${path}`);
    },
  };
}

/** Serves every repository under `base` as git://127.0.0.1:PORT/<name>; stopped after the test. */
export async function startGitDaemon(base: string, t: AfterHook): Promise<{ url: (name: string) => string }> {
  const port = await freePort();
  await spawnServer(
    'git',
    ['daemon', '--reuseaddr', `--base-path=${base}`, '--listen=127.0.0.1', `--port=${port}`, base],
    { readyCheck: () => isListening(port), t, name: 'git daemon' },
  );
  return { url: (name) => `git://127.0.0.1:${port}/${name}` };
}
