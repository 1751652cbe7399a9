// Temporary directories for tests, removed when asked and, as a safety net, when the process exits.
import { rmSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

const live = new Set<string>();
let exitHookInstalled = false;

function installExitHook(): void {
  if (exitHookInstalled) return;
  exitHookInstalled = true;
  // 'exit' handlers must be synchronous; whatever a test forgot is removed here.
  process.on('exit', () => {
    for (const dir of live) {
      try {
        rmSync(dir, { recursive: true, force: true, maxRetries: 2 });
      } catch {
        // Best effort at exit: nothing left to report to.
      }
    }
    live.clear();
  });
}

/** Creates a fresh directory under the system temp dir (`strata-<prefix>-XXXXXX`), removed at exit at the latest. */
export async function tempDir(prefix: string): Promise<string> {
  installExitHook();
  const safe = prefix.replace(/[^A-Za-z0-9_.-]/g, '_');
  const dir = await mkdtemp(join(tmpdir(), `strata-${safe}-`));
  live.add(dir);
  return dir;
}

/** Removes a directory made by tempDir now (idempotent). */
export async function removeTempDir(dir: string): Promise<void> {
  await rm(dir, { recursive: true, force: true, maxRetries: 3 });
  live.delete(dir);
}

/** Temp dirs made by this process and not removed yet (for tests that assert cleanup). */
export function liveTempDirs(): string[] {
  return [...live];
}

/**
 * A stack of undo actions: `add` as resources are acquired, `run` once to release them in reverse order.
 * Every action runs even when an earlier one fails; the first failure is rethrown afterwards.
 */
export class Cleanup {
  private readonly actions: Array<() => Promise<void> | void> = [];
  private done: Promise<void> | undefined;

  add(action: () => Promise<void> | void): void {
    if (this.done) throw new Error('Cleanup.add after run');
    this.actions.push(action);
  }

  /** Adds removal of a temp dir made by tempDir. */
  addDir(dir: string): void {
    this.add(() => removeTempDir(dir));
  }

  run(): Promise<void> {
    this.done ??= (async () => {
      let first: unknown;
      for (const action of this.actions.reverse()) {
        try {
          await action();
        } catch (err) {
          first ??= err;
        }
      }
      if (first !== undefined) throw first;
    })();
    return this.done;
  }
}
