// For orchestration tests of the builder: an engine whose builds wait until the test releases them (or
// their signal ends them), then "build" by copying an existing image to the target, as a push would; a
// Dockerfile build request from a git repository; and a stream collected to its end.

import { join } from 'node:path';
import type { EngineJob } from '../../src/builder/buildah.ts';
import type { BuildEngine, BuildRequestSpec, BuildUpdate } from '../../src/builder/orchestrator.ts';
import { NO_AUTH } from '../../src/builder/registry-auth.ts';
import { parseNormalizedReference } from '../../src/oci/reference.ts';
import { RegistryClient } from '../../src/registry/client.ts';
import { copyImage } from '../../src/registry/copy.ts';
import { createRepo, type TestRepo } from './git-repo.ts';
import { pushBusybox } from './images.ts';
import { waitFor } from './process.ts';
import type { TestRegistry } from './registry.ts';

export class GatedEngine implements BuildEngine {
  jobs: EngineJob[] = [];
  private gates: Array<() => void> = [];
  private readonly client = new RegistryClient();
  private readonly source: string;

  /** `source`: the image every build pushes. */
  constructor(source: string) {
    this.source = source;
  }

  async build(job: EngineJob) {
    this.jobs.push(job);
    await new Promise<void>((resolve, reject) => {
      // Its time may be out already (a loaded machine, a short build timeout): no abort event comes then.
      if (job.signal.aborted) return reject(job.signal.reason);
      this.gates.push(resolve);
      job.signal.addEventListener('abort', () => reject(job.signal.reason), { once: true });
    });
    job.onLine('built');
    const r = await copyImage(
      this.client,
      parseNormalizedReference(this.source),
      parseNormalizedReference(job.target),
    );
    return { digest: r.descriptor.digest };
  }

  release(): void {
    for (const g of this.gates.splice(0)) g();
  }

  /** Lets the build that reached the engine first, of those still waiting, go on. */
  releaseFirst(): void {
    this.gates.shift()?.();
  }

  /** Waits until `n` builds have reached the engine; throws after `timeoutMs`, so a test cannot hang here. */
  async started(n: number, timeoutMs = 60_000): Promise<void> {
    await waitFor(() => this.jobs.length >= n, timeoutMs, {
      intervalMs: 20,
      what: `${n} builds in the engine`,
    });
  }
}

/** A build of `<sub>/Dockerfile` (context `<sub>`) at the head of `remoteUri`. */
export function dockerfileRequest(remoteUri: string, sub: string, force = false): BuildRequestSpec {
  return {
    source: {
      kind: 'dockerfile',
      git: { remoteUri, targetMode: 'remoteHead', cloneTarget: '', checkoutLocation: '', fullClone: false },
      dockerfilePath: `${sub}/Dockerfile`,
      contextPath: sub,
      version: '',
      buildArgs: {},
    },
    auth: NO_AUTH,
    forceRebuild: force,
    triggeredBy: 'test',
    baseImageNameResolved: '',
    useRetryClient: false,
  };
}

export async function collectUpdates(it: AsyncIterable<BuildUpdate>): Promise<BuildUpdate[]> {
  const out: BuildUpdate[] = [];
  for await (const u of it) out.push(u);
  return out;
}

/**
 * busybox pushed to `reg`, and a repository under `dir` whose directories `sub` each hold a Dockerfile
 * (FROM busybox, COPY x) and a file `x` of their own.
 */
export async function dockerfileRepo(
  reg: TestRegistry,
  dir: string,
  subs: readonly string[],
): Promise<{ busybox: string; repo: TestRepo }> {
  const busybox = (await pushBusybox(reg, 'library/busybox')).ref;
  const repo = await createRepo(join(dir, 'app'));
  const files: Record<string, string> = {};
  for (const sub of subs) {
    files[`${sub}/Dockerfile`] = `FROM ${busybox}\nCOPY x /x\n`;
    files[`${sub}/x`] = `${sub}\n`;
  }
  await repo.commit(files);
  return { busybox, repo };
}
