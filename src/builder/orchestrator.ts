// The image builder's behaviour, with no wire types: ResolveBaseImage, ResolveWorkspaceImage, Build
// (existing image → one success at once; identical requests in flight join the running build; a bounded
// number of builds run, the rest wait in a queue and say so; each has a timeout; a caller leaving does not
// stop a build; shutdown cancels builds and removes their work), Logs and ListBuilds.
import { createHash, randomUUID } from 'node:crypto';
import { mkdir, realpath, rename, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { LRUCache } from 'lru-cache';
import type { Logger } from 'pino';
import {
  failedPrecondition,
  invalidArgument,
  messageOf,
  notFound,
  resourceExhausted,
  unavailable,
} from '../errors.ts';
import { Limiter } from '../limiter.ts';
import type { Platform } from '../oci/descriptor.ts';
import { formatPlatform, parsePlatform } from '../oci/platform.ts';
import { parseNormalizedReference } from '../oci/reference.ts';
import { copyImage } from '../registry/copy.ts';
import type { CredentialStore } from '../registry/credentials.ts';
import { type BuildInputs, buildKey, describeChanges } from './build-key.ts';
import type { EngineJob, EngineResult } from './buildah.ts';
import { BuildFailed } from './buildah.ts';
import { type DockerfileAnalysis, pinImages } from './dockerfile.ts';
import { DockerfileAnalyzer } from './dockerfile-analyzer.ts';
import { prepareInputs, readSnapshot, type SourceSnapshot } from './dockerfile-source.ts';
import { dirBytes, type GitOptions, GitRepo, type GitSource, repoPath } from './git-source.ts';
import { checkoutSubmodules, fetchSubmodules } from './git-submodules.ts';
import { type BuildLog, type BuildRecord, Censor, type LogStore } from './log-store.ts';
import type { ProxyVariables } from './proxy-env.ts';
import { dockerfileBaseRef, workspaceRef } from './refs.ts';
import type { RegistryAccess } from './registries.ts';
import {
  AuthPolicy,
  authFileJson,
  buildAuthEntries,
  type RegistryAuthRequest,
  secretsOf,
} from './registry-auth.ts';
import { imageExists, normalizeImageRef, resolveImage } from './resolve.ts';
import type { Claim, SharedBuilds, SharedUpdate } from './shared-builds.ts';
import type { HistoryHead, SourceHistory } from './source-history.ts';

export type BuildSourceSpec =
  | { kind: 'ref'; ref: string }
  | {
      kind: 'dockerfile';
      git: GitSource;
      dockerfilePath: string;
      contextPath: string;
      /** dockerfile_version: the caller's own part of the key. */
      version: string;
      buildArgs: Record<string, string>;
    };

export interface BuildRequestSpec {
  source: BuildSourceSpec;
  auth: RegistryAuthRequest;
  forceRebuild: boolean;
  triggeredBy: string;
  baseImageNameResolved: string;
  useRetryClient: boolean;
}

/** A build as ListBuilds and the stream describe it. */
export type BuildInfo = BuildRecord;

export interface BuildUpdate {
  status: 'running' | 'succeeded' | 'failed';
  ref: string;
  baseRef: string;
  message: string;
  info?: BuildInfo;
}

export interface BuildEngine {
  build(job: EngineJob): Promise<EngineResult>;
  /**
   * Whether the layer cache is over its budget. An engine whose measure is costly may answer false
   * without measuring when it measured a short while ago. `signal`: the builder's shutdown.
   */
  cacheOverBudget?(signal?: AbortSignal): Promise<boolean>;
  /**
   * Brings the layer cache within its budget. Called only after cacheOverBudget said it is over, while no
   * build holds a slot (it removes images). `signal`: the builder's shutdown, which ends it early.
   */
  trimCache?(log: (msg: string) => void, signal?: AbortSignal): Promise<void>;
  /** Removes every working container; called only while no build holds a slot. */
  removeContainers?(): Promise<void>;
}

export interface BuilderObserver {
  started(): void;
  finished(outcome: 'success' | 'failure', seconds: number): void;
  joined(): void;
  queueLength(n: number): void;
}

export interface BuilderOptions {
  stateDir: string;
  baseRepository: string;
  workspaceRepository: string;
  registries: RegistryAccess;
  installation: CredentialStore;
  /** Registries every request may use the installation's credentials for (see AuthPolicy). */
  systemRegistries?: ReadonlySet<string>;
  engine: BuildEngine;
  logs: LogStore;
  history: SourceHistory;
  logger: Logger;
  platform: Platform;
  /** Registry hosts reached over plain HTTP (handed to buildah). */
  insecureHosts: readonly string[];
  parallelism: number;
  /** Builds that may wait for a slot; more are refused (ResourceExhausted). */
  maxQueued: number;
  timeoutMs: number;
  /** How long finished builds stay in ListBuilds. */
  keepFinishedMs: number;
  /** Values removed from logs read with `censored`. */
  secrets: readonly string[];
  allowFileRemotes: boolean;
  gitTimeoutMs: number;
  /**
   * Bytes one git source may take: its git objects with its submodules' (measured while git fetches),
   * and apart from those the files its checkout writes (summed from the tree before it is written).
   */
  repositoryMaxBytes: number;
  /** Proxy variables for git (see proxy-env.ts); none by default. */
  proxy?: ProxyVariables;
  observer?: BuilderObserver;
  /** Builds shared with other replicas (Redis); without it each replica builds on its own. */
  shared?: SharedBuilds;
}

/** What a build will make and from what: computed before deciding to build. */
interface Plan {
  /** Identity of the source for "what changed since last time". */
  source: string;
  baseRef: string;
  ref: string;
  key?: string;
  inputs?: BuildInputs;
  dockerfile?: {
    spec: Extract<BuildSourceSpec, { kind: 'dockerfile' }>;
    snapshot: SourceSnapshot;
    analysis: DockerfileAnalysis;
    workspacePaths: { dockerfilePath: string; contextPath: string };
  };
}

/** A build in flight: its updates, replayed to every caller that follows it. */
class ActiveBuild {
  readonly id = randomUUID();
  readonly plan: Plan;
  readonly updates: BuildUpdate[] = [];
  done = false;
  log: BuildLog | undefined;
  private waiters: Array<() => void> = [];
  readonly run: Promise<void>;

  constructor(plan: Plan, runner: (b: ActiveBuild) => Promise<void>) {
    this.plan = plan;
    this.run = runner(this);
  }

  push(update: BuildUpdate, final = false): void {
    this.updates.push(update);
    if (final) this.done = true;
    const w = this.waiters;
    this.waiters = [];
    for (const fn of w) fn();
  }

  async *follow(signal?: AbortSignal): AsyncGenerator<BuildUpdate> {
    let next = 0;
    for (;;) {
      while (next < this.updates.length) yield this.updates[next++] as BuildUpdate;
      if (this.done || signal?.aborted) return;
      await new Promise<void>((resolve) => {
        const wake = () => {
          signal?.removeEventListener('abort', wake);
          resolve();
        };
        signal?.addEventListener('abort', wake, { once: true });
        this.waiters.push(wake);
      });
    }
  }
}

/** A FIFO of build slots, which can be held: then none is handed out until it is resumed. */
class Slots {
  private free: number;
  private readonly size: number;
  private readonly waiting: Array<() => void> = [];
  private holding = false;
  constructor(n: number) {
    this.free = n;
    this.size = n;
  }
  get queued(): number {
    return this.waiting.length;
  }
  get held(): boolean {
    return this.holding;
  }
  /** No slot is taken. */
  get idle(): boolean {
    return this.free === this.size;
  }
  tryTake(): boolean {
    if (!this.holding && this.free > 0 && this.waiting.length === 0) {
      this.free--;
      return true;
    }
    return false;
  }
  hold(): void {
    this.holding = true;
  }
  /** Hands out, in queue order, the slots given back while held. */
  resume(): void {
    this.holding = false;
    while (this.free > 0 && this.waiting.length > 0) {
      this.free--;
      this.waiting.shift()?.();
    }
  }
  wait(signal: AbortSignal): Promise<void> {
    return new Promise((resolve, reject) => {
      const onAbort = () => {
        const i = this.waiting.indexOf(entry);
        if (i >= 0) {
          this.waiting.splice(i, 1);
          reject(signal.reason);
        }
      };
      // The signal lives as long as the builder: a listener left on it for each wait would pile up.
      const entry = () => {
        signal.removeEventListener('abort', onAbort);
        resolve();
      };
      this.waiting.push(entry);
      signal.addEventListener('abort', onAbort, { once: true });
    });
  }
  release(): void {
    const next = this.holding ? undefined : this.waiting.shift();
    if (next) next();
    else this.free++;
  }
}

/**
 * What a fetch of `g` is cached under: the remote and the credentials that fetched it, so a caller
 * without access to a private repository never gets what another caller's credentials fetched.
 */
function fetchedBy(g: GitSource): string {
  const who = g.auth
    ? createHash('sha256').update(`${g.auth.username}\0${g.auth.password}`).digest('hex')
    : '';
  return `${g.remoteUri}\0${who}`;
}

const SNAPSHOT_ENTRIES = 2_000_000;
const FETCHED_KEEP_MS = 120_000;
const PLAN_FETCHES = 8;
/**
 * Git directories planning keeps for the build that usually follows (it starts at once unless queued):
 * at most this many, and at most repositoryMax bytes together; the oldest is let go to make room.
 */
const PLAN_KEEP = 8;
/**
 * Last builds' records read whole (their files, tens of MB for a large context) to say what changed, at
 * once. Every build works its reason out when it is asked for, queued ones too (their queued message
 * gives it), so without a bound a queue of large sources would hold a record each.
 */
const COMPARING = 2;

/** A build's reason, given the last build of its source and what differs from it (`changes`). */
function reasonText(last: HistoryHead | undefined, key: string, ref: string, changes: string[]): string {
  if (!last) return `no image for this key yet (first build of this source here): ${ref}`;
  if (last.key === key) return 'the image built for this key earlier is no longer in the registry';
  const when = new Date(last.builtAt).toISOString();
  if (changes.length === 0) return `no image for this key yet (inputs differ from the build of ${when})`;
  return `compared with the last build of this source (${when}): ${changes.join('; ')}`;
}

export class Builder {
  private readonly o: BuilderOptions;
  private readonly inflight = new Map<string, ActiveBuild>();
  private readonly active = new Set<ActiveBuild>();
  private readonly slots: Slots;
  /** Git fetches of planning at once: many new commits at once must not fork git without bound. */
  private readonly fetchSlots = new Slots(PLAN_FETCHES);
  /** Reasons comparing a last build's files (see COMPARING). */
  private readonly comparing = new Limiter(COMPARING);
  private readonly shutdown = new AbortController();
  /** Snapshots by commit and paths, bounded by the files they list; loads in flight are shared. */
  private readonly snapshots = new LRUCache<string, SourceSnapshot>({
    maxSize: SNAPSHOT_ENTRIES,
    sizeCalculation: (s) => s.entries.length + 1,
  });
  private readonly loadingSnapshots = new Map<string, Promise<SourceSnapshot>>();
  /**
   * Dockerfiles are parsed off the event loop, a bounded number at once, and once per snapshot (and
   * build args), not at every request that plans the commit.
   */
  private readonly analyzer: DockerfileAnalyzer;
  /** Every fetch of planning under way (shutdown waits for them to remove their git directories). */
  private readonly planning = new Set<Promise<SourceSnapshot>>();
  /** Git directories fetched while planning, kept a little while for the build that usually follows. */
  private readonly fetched = new Map<string, { dir: string; timer: NodeJS.Timeout; bytes: number }>();
  /** What `fetched` holds on disk. */
  private fetchedBytes = 0;
  /** Upkeep under way (see afterBuild), and whether it is wanted. */
  private upkeep: Promise<void> | undefined;
  private upkeepWanted = false;
  /** What each build's end started (a measure of the cache, upkeep): shutdown waits for it. */
  private readonly housekeeping = new Set<Promise<void>>();
  /** A build failed since the last upkeep: it may have left a container behind. */
  private leftovers = false;

  constructor(options: BuilderOptions) {
    this.o = options;
    this.slots = new Slots(Math.max(1, options.parallelism));
    this.analyzer = new DockerfileAnalyzer();
  }

  private policy(auth: RegistryAuthRequest): AuthPolicy {
    return new AuthPolicy(
      auth,
      { base: this.o.baseRepository, workspace: this.o.workspaceRepository },
      this.o.installation,
      this.o.systemRegistries,
    );
  }

  // ----------------------------------------------------------------------------------------------
  // resolution

  async resolveBaseImage(
    ref: string,
    auth: RegistryAuthRequest,
    useRetryClient: boolean,
    signal?: AbortSignal,
  ) {
    const client = this.o.registries.forPolicy(this.policy(auth), useRetryClient);
    return resolveImage(client, ref, this.o.platform, signal);
  }

  async resolveWorkspaceImage(
    source: BuildSourceSpec,
    auth: RegistryAuthRequest,
    useRetryClient: boolean,
    signal?: AbortSignal,
  ): Promise<{ ref: string; baseRef: string; exists: boolean }> {
    const plan = await this.plan(source, this.policy(auth), useRetryClient, signal);
    const exists = await imageExists(this.o.registries.installation(useRetryClient), plan.ref, signal);
    return { ref: plan.ref, baseRef: plan.baseRef, exists };
  }

  private async plan(
    source: BuildSourceSpec,
    policy: AuthPolicy,
    retry: boolean,
    signal?: AbortSignal,
  ): Promise<Plan> {
    const client = this.o.registries.forPolicy(policy, retry);
    if (source.kind === 'ref') {
      const baseRef = await resolveImage(client, source.ref, this.o.platform, signal);
      return {
        source: `ref\0${source.ref}`,
        baseRef,
        ref: workspaceRef(this.o.workspaceRepository, baseRef),
      };
    }
    const g = source.git;
    const paths = {
      dockerfilePath: repoPath(source.dockerfilePath, g.checkoutLocation, 'dockerfile_path'),
      contextPath: '',
    };
    // No context path means the Dockerfile's directory (as the anchor has it).
    paths.contextPath =
      source.contextPath === ''
        ? paths.dockerfilePath.split('/').slice(0, -1).join('/')
        : repoPath(source.contextPath, g.checkoutLocation, 'context_path');
    const snapshot = await this.snapshot(g, paths, signal);
    const workspacePaths = { dockerfilePath: source.dockerfilePath, contextPath: source.contextPath };
    const { inputs, analysis } = await prepareInputs(snapshot, {
      buildArgs: source.buildArgs,
      version: source.version,
      workspacePaths,
      pin: (image, platform) =>
        resolveImage(client, image, platform ? parsePlatform(platform) : this.o.platform, signal),
      platform: formatPlatform(this.o.platform),
      analyze: (text, args) => this.analyzer.analyzeOnce(snapshot, text, args),
      ...(signal && { signal }),
    });
    const key = await buildKey(inputs, signal);
    const baseRef = dockerfileBaseRef(this.o.baseRepository, key);
    return {
      source: `git\0${g.remoteUri}\0${source.dockerfilePath}\0${source.contextPath}`,
      baseRef,
      ref: workspaceRef(this.o.workspaceRepository, baseRef),
      key,
      inputs,
      dockerfile: { spec: source, snapshot, analysis, workspacePaths },
    };
  }

  private gitOptions(): GitOptions {
    return {
      allowFileRemotes: this.o.allowFileRemotes,
      timeoutMs: this.o.gitTimeoutMs,
      maxBytes: this.o.repositoryMaxBytes,
      ...(this.o.proxy && { proxy: this.o.proxy }),
    };
  }

  /** The Dockerfile, .dockerignore and file list of a commit: fetched once, then cached by commit. */
  private async snapshot(
    g: GitSource,
    paths: { dockerfilePath: string; contextPath: string },
    signal?: AbortSignal,
  ): Promise<SourceSnapshot> {
    const dir = join(this.o.stateDir, 'work', `plan-${randomUUID()}`);
    const repo = GitRepo.open(join(dir, 'git'), g, this.gitOptions());
    // The fetch is shared, so only shutdown ends it (its git and submodule fetches with it).
    const stop = this.shutdown.signal;
    const commit = await repo.resolveCommit(signal ? AbortSignal.any([signal, stop]) : stop);
    const cacheKey = commit && `${fetchedBy(g)}\0${commit}\0${paths.dockerfilePath}\0${paths.contextPath}`;
    const cached = cacheKey
      ? (this.snapshots.get(cacheKey) ?? this.loadingSnapshots.get(cacheKey))
      : undefined;
    if (cached) return cached;
    // Shared by every request for this commit, so no one caller's cancel ends it (git's timeout bounds it).
    const loading = (async () => {
      let keep = false;
      if (!this.fetchSlots.tryTake()) await this.fetchSlots.wait(stop);
      try {
        const fetched = await repo.fetch(commit, stop);
        const snapshot = await readSnapshot(repo, fetched, paths, stop);
        if (cacheKey) this.snapshots.set(cacheKey, snapshot);
        keep = await this.keepFetched(`${fetchedBy(g)}\0${fetched}`, dir);
        return snapshot;
      } catch (err) {
        throw stop.aborted ? unavailable('the builder is shutting down') : err;
      } finally {
        this.fetchSlots.release();
        if (!keep) await rm(dir, { recursive: true, force: true });
        if (cacheKey) this.loadingSnapshots.delete(cacheKey);
      }
    })();
    if (cacheKey) this.loadingSnapshots.set(cacheKey, loading);
    this.planning.add(loading);
    void loading.then(
      () => this.planning.delete(loading),
      () => this.planning.delete(loading),
    );
    return loading;
  }

  private async keepFetched(key: string, dir: string): Promise<boolean> {
    if (this.fetched.has(key) || this.shutdown.signal.aborted) return false;
    const bytes = await dirBytes(dir);
    const max = this.o.repositoryMaxBytes;
    if (this.fetched.has(key) || this.shutdown.signal.aborted || bytes > max) return false;
    // Oldest first: let go of them until this one fits (taken at once, so keeps at the same time agree).
    const gone: string[] = [];
    for (const old of [...this.fetched.keys()]) {
      if (this.fetched.size < PLAN_KEEP && this.fetchedBytes + bytes <= max) break;
      const d = this.takeFetched(old);
      if (d) gone.push(d);
    }
    const timer = setTimeout(() => {
      const d = this.takeFetched(key);
      if (d) void rm(d, { recursive: true, force: true });
    }, FETCHED_KEEP_MS);
    timer.unref();
    this.fetched.set(key, { dir, timer, bytes });
    this.fetchedBytes += bytes;
    for (const d of gone) await rm(d, { recursive: true, force: true });
    return true;
  }

  /** A git directory planning kept under `key` (its `git` subdirectory holds the fetch), now the caller's. */
  private takeFetched(key: string): string | undefined {
    const entry = this.fetched.get(key);
    if (!entry) return undefined;
    clearTimeout(entry.timer);
    this.fetched.delete(key);
    this.fetchedBytes -= entry.bytes;
    return entry.dir;
  }

  // ----------------------------------------------------------------------------------------------
  // builds

  async *build(req: BuildRequestSpec, signal?: AbortSignal): AsyncGenerator<BuildUpdate> {
    if (this.shutdown.signal.aborted) throw unavailable('the builder is shutting down');
    const policy = this.policy(req.auth);
    let source = req.source;
    const installation = this.o.registries.installation(req.useRetryClient);
    if (req.baseImageNameResolved !== '' && !req.forceRebuild) {
      // The caller's already-resolved base: its workspace image may exist; else only a copy is needed.
      const baseRef = req.baseImageNameResolved;
      const ref = workspaceRef(this.o.workspaceRepository, baseRef);
      if (await imageExists(installation, ref, signal)) {
        yield { status: 'succeeded', ref, baseRef, message: '' };
        return;
      }
      const shortcut =
        req.auth.mode.kind === 'selective'
          ? this.policy({ ...req.auth, mode: { ...req.auth.mode, allowBaseRepository: true } })
          : policy;
      try {
        const digest = await resolveImage(
          this.o.registries.forPolicy(shortcut, req.useRetryClient),
          baseRef,
          this.o.platform,
          signal,
        );
        source = { kind: 'ref', ref: digest };
      } catch {
        // Gone (collected, say): build from the source as asked.
      }
    }
    const plan = await this.plan(source, policy, req.useRetryClient, signal);
    if (!req.forceRebuild && (await imageExists(installation, plan.ref, signal))) {
      yield { status: 'succeeded', ref: plan.ref, baseRef: plan.baseRef, message: '' };
      return;
    }
    const local = req.forceRebuild ? undefined : this.inflight.get(plan.ref);
    if (local) {
      this.o.observer?.joined();
      yield* local.follow(signal);
      return;
    }
    const shared = this.o.shared;
    if (!shared || req.forceRebuild) {
      yield* this.start(plan, req, policy).follow(signal);
      return;
    }
    // Another replica may build it: claim it, or relay that replica's build until it ends or its claim lapses.
    // With Redis out of use this replica builds it alone (another may build it too): an outage of the
    // shared state must not fail a build nor hold it up.
    const alone = (err: unknown) => {
      this.o.logger.warn(
        { ref: plan.ref, err: messageOf(err) },
        'cannot share this build through Redis; building it here',
      );
      return this.start(plan, req, policy).follow(signal);
    };
    for (;;) {
      let claim: Claim | undefined;
      try {
        claim = await shared.claim(plan.ref);
      } catch (err) {
        yield* alone(err);
        return;
      }
      if (claim) {
        // Another replica may have finished it since we looked.
        if (await imageExists(installation, plan.ref, signal).catch(() => false)) {
          await claim.release();
          yield { status: 'succeeded', ref: plan.ref, baseRef: plan.baseRef, message: '' };
          return;
        }
        let started: ActiveBuild;
        try {
          started = this.start(plan, req, policy, claim);
        } catch (err) {
          await claim.release();
          throw err;
        }
        yield* started.follow(signal);
        return;
      }
      this.o.observer?.joined();
      const relay = shared.follow(plan.ref, signal);
      let r: IteratorResult<SharedUpdate, 'done' | 'lapsed'>;
      try {
        r = await relay.next();
        while (!r.done) {
          yield r.value as BuildUpdate;
          r = await relay.next();
        }
      } catch (err) {
        if (signal?.aborted) return;
        yield* alone(err);
        return;
      }
      if (r.value !== 'lapsed' || signal?.aborted) return;
      this.o.logger.warn({ ref: plan.ref }, 'the replica building this image stopped; building it here');
    }
  }

  private start(plan: Plan, req: BuildRequestSpec, policy: AuthPolicy, claim?: Claim): ActiveBuild {
    if (this.shutdown.signal.aborted) throw unavailable('the builder is shutting down');
    if (this.active.size >= this.o.parallelism + this.o.maxQueued) {
      throw resourceExhausted(
        `the build queue is full (${this.slots.queued} builds waiting); try again later`,
      );
    }
    const build = new ActiveBuild(plan, (b) => this.run(b, req, policy, claim));
    this.inflight.set(plan.ref, build);
    this.active.add(build);
    this.o.observer?.started();
    return build;
  }

  private async reason(plan: Plan, force: boolean, signal: AbortSignal): Promise<string> {
    if (force) return 'force_rebuild was asked for';
    const key = plan.key ?? plan.baseRef;
    // The record's header says whether its files are to be compared: often they are not (the same key, a
    // reference source), and then they are neither read nor held.
    const head = await this.o.history.head(plan.source, signal);
    const now = plan.inputs;
    if (!head || head.key === key || !head.inputs || !now) return reasonText(head, key, plan.ref, []);
    return this.comparing.run(async () => {
      // Read again, whole: a build of this source may have replaced the record meanwhile.
      const last = await this.o.history.get(plan.source, signal);
      const changes = last?.inputs && last.key !== key ? await describeChanges(last.inputs, now, signal) : [];
      return reasonText(last, key, plan.ref, changes);
    }, signal);
  }

  private info(record: BuildRecord): BuildInfo {
    return { ...record };
  }

  private async run(
    build: ActiveBuild,
    req: BuildRequestSpec,
    policy: AuthPolicy,
    claim?: Claim,
  ): Promise<void> {
    await Promise.resolve(); // let the caller register the build before it runs
    const { plan } = build;
    const started = performance.now();
    let slot = false;
    let workDir: string | undefined;
    const abort = this.shutdown.signal;
    let timeout: AbortSignal | undefined;
    // A claimed build's updates and log go to the other replicas too, in order.
    const shared = claim ? this.o.shared : undefined;
    let published: Promise<unknown> = Promise.resolve();
    let unshared = false; // warned once per build, not at each log line while Redis is away
    const share = (fn: (s: SharedBuilds) => Promise<unknown>) => {
      if (!shared) return;
      published = published
        .then(() => fn(shared))
        .catch((err: unknown) => {
          if (unshared) return;
          unshared = true;
          this.o.logger.warn({ buildId: build.id, err: messageOf(err) }, 'cannot share build progress');
        });
    };
    // The claim is no longer this replica's (it lapsed while Redis was out of reach, or Redis lost it, and
    // another replica may have taken it): the build goes on for this replica's callers, but the updates of
    // its ref may be another replica's build now.
    let warnedLost = false;
    const lost = () => {
      if (warnedLost) return;
      warnedLost = true;
      this.o.logger.warn(
        { buildId: build.id, ref: plan.ref },
        'this replica no longer holds the build’s claim (it lapsed, or another replica took it); no longer sharing its updates',
      );
    };
    const update = (status: BuildUpdate['status'], message: string, final = false) => {
      const info = build.log ? this.info(build.log.record()) : undefined;
      const u: BuildUpdate = { status, ref: plan.ref, baseRef: plan.baseRef, message, ...(info && { info }) };
      build.push(u, final);
      // Stopping mid-build: other replicas' callers are better served by their replica taking over
      // (the claim lapses once released) than by this replica's shutdown.
      if (claim && !(final && status === 'failed' && this.shutdown.signal.aborted))
        share((s) => s.publish(claim, u).then((kept) => kept || lost()));
    };
    try {
      const reason = await this.reason(plan, req.forceRebuild, abort);
      const log = await this.o.logs.create(
        {
          id: build.id,
          ref: plan.ref,
          baseRef: plan.baseRef,
          phase: 'queued',
          startedAt: Date.now(),
          reason,
        },
        [],
        shared && ((line) => share((s) => s.appendLog(build.id, `${line}\n`))),
      );
      build.log = log;
      log.line(`Why this build: ${reason}`);
      slot = this.slots.tryTake();
      if (!slot) {
        const position = this.slots.queued + 1;
        const why = this.slots.held
          ? 'builds wait for upkeep of the layer cache (its trim, containers failed builds left), which runs once no build runs'
          : `all ${this.o.parallelism} build slots are busy`;
        const queued = `queued at position ${position}: ${why}`;
        log.line(`${queued[0]?.toUpperCase()}${queued.slice(1)}`);
        update('running', `${queued}; ${reason}`);
        this.o.observer?.queueLength(this.slots.queued + 1);
        await this.slots.wait(abort);
        slot = true;
        this.o.observer?.queueLength(this.slots.queued);
      }
      log.update({ phase: 'running', startedAt: Date.now() });
      update('running', reason);
      timeout = AbortSignal.timeout(this.o.timeoutMs);
      const signal = AbortSignal.any([abort, timeout]);
      const deadline = Date.now() + this.o.timeoutMs;
      if (plan.dockerfile) {
        workDir = join(this.o.stateDir, 'work', build.id);
        await this.buildDockerfile(build, plan, policy, workDir, signal, deadline);
      }
      await this.copy(build, plan, policy, req.useRetryClient, signal);
      // Our own check of our own push, with the retrying client whatever the request asked: a registry
      // blinking here (docker-registry answers 500 to a read of a tag another build is pushing at that
      // moment) must not fail a build whose image is there.
      if (!(await imageExists(this.o.registries.installation(true), plan.ref, signal))) {
        throw new BuildFailed('image build did not produce a workspace image');
      }
      await this.o.history
        .put(
          plan.source,
          {
            key: plan.key ?? plan.baseRef,
            ...(plan.inputs && { inputs: plan.inputs }),
            builtAt: Date.now(),
          },
          this.shutdown.signal,
        )
        .catch((err: unknown) =>
          this.o.logger.warn({ err: messageOf(err) }, 'cannot record the build inputs'),
        );
      log.line(`Done: ${plan.ref}`);
      await log.finish({ phase: 'succeeded', message: '' });
      this.o.observer?.finished('success', (performance.now() - started) / 1000);
      update('succeeded', '', true);
    } catch (err) {
      this.leftovers = true;
      const message = this.shutdown.signal.aborted
        ? 'image build failed: the builder shut down during the build'
        : timeout?.aborted
          ? `image build failed: the build did not finish within ${Math.round(this.o.timeoutMs / 1000)} s`
          : `image build failed: ${messageOf(err)}`;
      this.o.logger.info(
        { buildId: build.id, ref: plan.ref, triggeredBy: req.triggeredBy, err: message },
        'build failed',
      );
      if (build.log) {
        build.log.line(message);
        await build.log.finish({ phase: 'failed', message }).catch(() => {});
      }
      this.o.observer?.finished('failure', (performance.now() - started) / 1000);
      update('failed', message, true);
    } finally {
      if (shared) {
        share((s) => s.finishLog(build.id));
        await published;
      }
      await claim?.release();
      if (slot) this.slots.release();
      if (this.inflight.get(plan.ref) === build) this.inflight.delete(plan.ref);
      this.active.delete(build);
      if (workDir) await rm(workDir, { recursive: true, force: true }).catch(() => {});
      if (!this.shutdown.signal.aborted) {
        const after = this.afterBuild();
        this.housekeeping.add(after);
        void after.finally(() => this.housekeeping.delete(after));
      }
    }
  }

  /**
   * Upkeep, after each build. It removes containers and images (the containers of failed builds, which a
   * timeout's SIGKILL leaves buildah no chance to remove; the layer cache's trim), so it runs only while
   * no build holds a slot, and what a running build uses is never touched. The cache is measured as
   * builds end (the engine measures at most once a minute). Over its budget, the slots are held: builds
   * running go on to their end, new and queued builds wait in the queue and say why, and once none runs
   * the upkeep runs, then the slots go to the queue in order. So a builder that is never idle stays within
   * its budget too, at the price of a wait of at most its longest build (which the build timeout bounds)
   * and the trim, once a minute at most. With no build running, a failure's leftovers are removed too.
   */
  private async afterBuild(): Promise<void> {
    const { engine, logger } = this.o;
    const stop = this.shutdown.signal;
    if (!this.upkeepWanted && engine.cacheOverBudget) {
      const over = await engine.cacheOverBudget(stop).catch((err: unknown) => {
        if (!stop.aborted) logger.warn({ err: messageOf(err) }, 'cannot measure the layer cache');
        return false;
      });
      if (over && !stop.aborted && !this.upkeepWanted) {
        this.upkeepWanted = true;
        this.slots.hold();
        if (!this.slots.idle) logger.info('layer cache over its budget: builds wait until it is trimmed');
      }
    }
    if (stop.aborted || this.upkeep || !this.slots.idle || !(this.upkeepWanted || this.leftovers)) return;
    this.slots.hold();
    const upkeep = (async () => {
      try {
        if (this.leftovers) {
          this.leftovers = false;
          await engine
            .removeContainers?.()
            .catch((err: unknown) => logger.warn({ err: messageOf(err) }, 'cannot remove build containers'));
        }
        if (this.upkeepWanted && !stop.aborted) {
          await engine
            .trimCache?.((msg) => logger.info(msg), stop)
            .catch((err: unknown) => {
              if (!stop.aborted) logger.warn({ err: messageOf(err) }, 'layer cache trim failed');
            });
        }
      } finally {
        this.upkeepWanted = false;
        this.upkeep = undefined;
        if (!stop.aborted) this.slots.resume();
      }
    })();
    this.upkeep = upkeep;
    await upkeep;
  }

  private async buildDockerfile(
    build: ActiveBuild,
    plan: Plan,
    policy: AuthPolicy,
    workDir: string,
    signal: AbortSignal,
    deadline: number,
  ): Promise<void> {
    const d = plan.dockerfile as NonNullable<Plan['dockerfile']>;
    const log = build.log as BuildLog;
    const inputs = plan.inputs as BuildInputs;
    await mkdir(workDir, { recursive: true, mode: 0o700 });
    const g = d.spec.git;
    if (g.auth)
      log.addSecrets([
        g.auth.password,
        Buffer.from(`${g.auth.username}:${g.auth.password}`).toString('base64'),
      ]);
    const repo = GitRepo.open(join(workDir, 'git'), g, this.gitOptions());
    const commit = d.snapshot.commit;
    const handed = this.takeFetched(`${fetchedBy(g)}\0${commit}`);
    if (handed) {
      await rename(join(handed, 'git'), repo.gitDir);
      await rm(handed, { recursive: true, force: true });
      log.line(`Using ${g.remoteUri} at ${commit}`);
    } else {
      log.line(`Fetching ${g.remoteUri} at ${commit}`);
      const fetched = await repo.fetch(commit, signal);
      if (fetched !== commit) {
        throw failedPrecondition(`${g.remoteUri} moved from ${commit} to ${fetched} meanwhile; build again`);
      }
      await fetchSubmodules(repo, d.snapshot.submodules, signal);
    }
    // The git objects were bounded as they came; the files they expand to are known before they are written.
    let files = await repo.treeBytes(commit, signal);
    for (const m of d.snapshot.submodules) if (!m.skipped) files += await repo.treeBytes(m.commit, signal);
    const max = this.o.repositoryMaxBytes;
    if (files > max) {
      throw resourceExhausted(
        `the checkout of ${g.remoteUri} at ${commit} would write ${files} bytes, more than this builder takes (repositoryMax ${max} bytes)`,
      );
    }
    const workspace = join(workDir, 'workspace');
    const checkout = join(workspace, repoPath(g.checkoutLocation, '', 'checkout_location'));
    await repo.checkout(commit, checkout, signal);
    await checkoutSubmodules(repo, d.snapshot.submodules, checkout, signal);
    for (const m of d.snapshot.submodules) {
      log.line(`Submodule ${m.path} ${m.skipped ? `left empty: ${m.skipped}` : `at ${m.commit}`}`);
    }
    await rm(join(workDir, 'git'), { recursive: true, force: true });
    const contextDir = join(checkout, d.snapshot.contextPath);
    const real = await realpath(contextDir).catch(() => {
      throw failedPrecondition(
        `context directory ${JSON.stringify(d.workspacePaths.contextPath)} does not exist`,
      );
    });
    if (real !== (await realpath(workspace)) && !real.startsWith(`${await realpath(workspace)}/`)) {
      throw invalidArgument(
        `context directory ${JSON.stringify(d.workspacePaths.contextPath)} leaves the workspace`,
      );
    }
    const dockerfile = join(workDir, 'Dockerfile');
    await writeFile(
      dockerfile,
      pinImages(d.snapshot.dockerfile, d.analysis.images, (key) => inputs.images[key] as string),
    );
    const entries = await buildAuthEntries({
      policy,
      installation: this.o.installation,
      pulls: Object.values(inputs.images).map((r) => parseNormalizedReference(r)),
      push: parseNormalizedReference(this.o.baseRepository),
      workspaceDomain: parseNormalizedReference(this.o.workspaceRepository).domain,
      signal,
    });
    log.addSecrets(secretsOf(entries));
    const authFile = join(workDir, 'auth.json');
    await writeFile(authFile, authFileJson(entries), { mode: 0o600 });
    try {
      const { digest } = await this.o.engine.build({
        workDir,
        contextDir: real,
        dockerfile,
        buildArgs: d.spec.buildArgs,
        target: plan.baseRef,
        authFile,
        insecureHosts: this.o.insecureHosts,
        signal,
        onLine: (line) => log.line(line),
        timeoutMs: Math.max(1, deadline - Date.now()),
      });
      log.line(`Pushed ${plan.baseRef} (${digest})`);
    } finally {
      await rm(authFile, { force: true });
    }
  }

  /** The workspace image: the base copied registry to registry (blobs mounted where the registry can). */
  private async copy(
    build: ActiveBuild,
    plan: Plan,
    policy: AuthPolicy,
    retry: boolean,
    signal: AbortSignal,
  ) {
    const log = build.log as BuildLog;
    const client = plan.dockerfile
      ? this.o.registries.installation(retry)
      : this.o.registries.forCopy(policy, parseNormalizedReference(this.o.workspaceRepository).domain, retry);
    log.line(`Copying ${plan.baseRef} to ${plan.ref}`);
    const result = await copyImage(client, normalizeImageRef(plan.baseRef), normalizeImageRef(plan.ref), {
      signal,
    });
    const b = result.blobs;
    log.line(`Copied: ${b.mounted} blob(s) mounted, ${b.uploaded} uploaded, ${b.exists} already there`);
  }

  // ----------------------------------------------------------------------------------------------
  // logs and listing

  async *logs(
    query: { buildRef: string; buildId: string; censored: boolean },
    signal?: AbortSignal,
  ): AsyncGenerator<Buffer> {
    const record = query.buildId
      ? this.o.logs.get(query.buildId)
      : query.buildRef
        ? this.o.logs.findByRef(query.buildRef)
        : undefined;
    const censorFor = (ref: string, baseRef: string) =>
      query.censored
        ? new Censor([
            ...this.o.secrets,
            ref,
            baseRef,
            ref.split(':')[0] as string,
            baseRef.split(/[:@]/)[0] as string,
          ])
        : undefined;
    if (record) {
      const censor = censorFor(record.ref, record.baseRef);
      yield* this.o.logs.follow(record.id, { ...(signal && { signal }), ...(censor && { censor }) });
      return;
    }
    // A build another replica runs (or ran): its shared log.
    const shared = this.o.shared;
    const ref = shared && (query.buildId ? await shared.refOf(query.buildId) : query.buildRef);
    const last = shared && ref ? await shared.last(ref) : undefined;
    const id = query.buildId || last?.info?.id;
    if (!shared || !ref || !id || !(await shared.hasLog(id))) throw notFound('build not found');
    const censor = censorFor(ref, last?.baseRef ?? '');
    for await (const chunk of shared.followLog(id, ref, signal)) {
      yield censor ? Buffer.from(censor.apply(chunk.toString('utf8'))) : chunk;
    }
  }

  listBuilds(): BuildInfo[] {
    const since = Date.now() - this.o.keepFinishedMs;
    return this.o.logs
      .records()
      .filter((r) => r.finishedAt === undefined || r.finishedAt >= since)
      .map((r) => this.info(r));
  }

  /** Cancels every build, waits for them to clean up, and removes buildah's leftover containers. */
  async close(): Promise<void> {
    this.shutdown.abort(unavailable('the builder is shutting down'));
    // Taken before the first wait: a build leaves `active` before its work dir is removed, so one that
    // ends while close waits below would otherwise not be waited for.
    const running = [...this.active].map((b) => b.run);
    await this.analyzer.close();
    for (const key of [...this.fetched.keys()]) {
      const gone = this.takeFetched(key);
      if (gone) await rm(gone, { recursive: true, force: true });
    }
    await Promise.allSettled(running);
    await Promise.allSettled(this.planning);
    // A trim under way ends at its next step (an image removal already begun is let finish).
    await Promise.allSettled(this.housekeeping);
    await this.o.engine
      .removeContainers?.()
      .catch((err: unknown) => this.o.logger.warn({ err: messageOf(err) }, 'cannot remove build containers'));
  }
}
