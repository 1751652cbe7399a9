// From a commit of a git source to the inputs of its Dockerfile build: the Dockerfile's bytes, the
// ignore-file patterns and the context's files (all read from git objects, no checkout), then the
// analysis, the files the build reads and the external images pinned to digests.
import { createHash } from 'node:crypto';
import { failedPrecondition } from '../errors.ts';
import { type BuildInputs, filesRecord } from './build-key.ts';
import { type ContextEntry, dockerignorePatterns, selectContextFiles } from './context-files.ts';
import { analyzeDockerfile, type DockerfileAnalysis, imageKey, MAX_DOCKERFILE_BYTES } from './dockerfile.ts';
import type { GitRepo } from './git-source.ts';
import { type Submodule, withSubmodules } from './git-submodules.ts';

/** What a commit holds for a build: cacheable by (remote, commit, paths). */
export interface SourceSnapshot {
  commit: string;
  /** Repository-relative paths (the context's with its symlinks followed). */
  dockerfilePath: string;
  contextPath: string;
  dockerfile: string;
  ignorePatterns: string[];
  /** Submodules' files included, in place of their gitlinks. */
  entries: ContextEntry[];
  /** The submodules in the context, fetched into the source's git directory, parents first. */
  submodules: Submodule[];
  /** The .gitattributes files above the context (paths relative to it: `../.gitattributes`, …). */
  attributes: ContextEntry[];
}

const ATTRIBUTES = '.gitattributes';

/** .gitattributes above `contextPath`: they decide how the checkout writes the context's files. */
async function attributesAbove(
  repo: GitRepo,
  commit: string,
  contextPath: string,
  signal?: AbortSignal,
): Promise<ContextEntry[]> {
  const parts = contextPath === '' ? [] : contextPath.split('/');
  const out: ContextEntry[] = [];
  for (let depth = 0; depth < parts.length; depth++) {
    const dir = parts.slice(0, depth).join('/');
    const e = await repo.entry(commit, dir === '' ? ATTRIBUTES : `${dir}/${ATTRIBUTES}`, signal);
    if (e) out.push({ path: `${'../'.repeat(parts.length - depth)}${ATTRIBUTES}`, mode: e.mode, id: e.id });
  }
  return out;
}

export async function readSnapshot(
  repo: GitRepo,
  commit: string,
  paths: { dockerfilePath: string; contextPath: string },
  signal?: AbortSignal,
): Promise<SourceSnapshot> {
  // A context reached through a symlink is its target's tree (as the checkout buildah reads has it).
  const contextPath = await repo.resolvePath(commit, paths.contextPath, signal);
  const { entries, submodules } = await withSubmodules(
    repo,
    commit,
    contextPath,
    await repo.listTree(commit, contextPath, signal),
    signal,
  );
  // Files of the context are read by the blob id the listing gave; others (and symlinks) by path.
  const read = async (path: string, max?: number) => {
    const inContext = contextPath === '' || path.startsWith(`${contextPath}/`);
    if (!inContext) return repo.readFile(commit, path, signal, max);
    const name = contextPath === '' ? path : path.slice(contextPath.length + 1);
    const entry = entries.find((e) => e.path === name);
    if (!entry) return undefined;
    if (entry.mode === '100644' || entry.mode === '100755') return repo.readBlob(entry.id, signal, max, path);
    return repo.readFile(commit, path, signal, max);
  };
  const bytes = await read(paths.dockerfilePath, MAX_DOCKERFILE_BYTES);
  if (!bytes) {
    throw failedPrecondition(
      `could not find Dockerfile at ${JSON.stringify(paths.dockerfilePath)} in commit ${commit}`,
    );
  }
  // buildah reads .containerignore when there is one, and .dockerignore only when not.
  const inRoot = (name: string) => (contextPath === '' ? name : `${contextPath}/${name}`);
  const ignore = (await read(inRoot('.containerignore'))) ?? (await read(inRoot('.dockerignore')));
  return {
    commit,
    dockerfilePath: paths.dockerfilePath,
    contextPath,
    dockerfile: bytes.toString('utf8'),
    ignorePatterns: ignore ? dockerignorePatterns(ignore.toString('utf8')) : [],
    entries,
    submodules,
    attributes: await attributesAbove(repo, commit, contextPath, signal),
  };
}

export interface PreparedInputs {
  inputs: BuildInputs;
  analysis: DockerfileAnalysis;
}

/**
 * The inputs of a build of `snapshot`. `pin` resolves an image as the Dockerfile names it to its digest
 * reference (`host/path@sha256:…`) for a platform; `images` is keyed by imageKey.
 */
export async function prepareInputs(
  snapshot: SourceSnapshot,
  options: {
    buildArgs: Record<string, string>;
    version: string;
    workspacePaths: { dockerfilePath: string; contextPath: string };
    /** `platform`: FROM's --platform, when it names one (else the builder's). */
    pin: (image: string, platform?: string) => Promise<string>;
    /** The builder's platform, keyed for a Dockerfile that names no image. */
    platform: string;
    /**
     * Analyses the Dockerfile: the builder's runs off the event loop and keeps what it made; without it,
     * analyzeDockerfile here, in one step.
     */
    analyze?: (text: string, buildArgs: ReadonlyMap<string, string>) => Promise<DockerfileAnalysis>;
    /** Ends the selection and keying of the context's files (a large context's take a while). */
    signal?: AbortSignal;
  },
): Promise<PreparedInputs> {
  const analyze = options.analyze ?? (async (text, args) => analyzeDockerfile(text, args));
  const analysis = await analyze(snapshot.dockerfile, new Map(Object.entries(options.buildArgs)));
  const files = await selectContextFiles(
    snapshot.entries,
    { ignorePatterns: snapshot.ignorePatterns, sources: analysis.contextSources },
    options.signal,
  );
  // The checkout applies every .gitattributes on the way (line endings, encodings): keyed whether read or not.
  const attributes = [
    ...snapshot.attributes,
    ...snapshot.entries.filter((e) => e.path === ATTRIBUTES || e.path.endsWith(`/${ATTRIBUTES}`)),
  ];
  const images: Record<string, string> = {};
  for (const use of analysis.images) images[imageKey(use)] ??= await options.pin(use.image, use.platform);
  return {
    analysis,
    inputs: {
      dockerfilePath: options.workspacePaths.dockerfilePath,
      contextPath: options.workspacePaths.contextPath,
      dockerfile: createHash('sha256').update(snapshot.dockerfile).digest('hex'),
      images,
      files: await filesRecord([...files, ...attributes], options.signal),
      buildArgs: { ...options.buildArgs },
      remoteSources: analysis.remoteSources,
      version: options.version,
      ...(analysis.images.length === 0 && { platform: options.platform }),
    },
  };
}
