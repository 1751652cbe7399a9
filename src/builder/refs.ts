// The names builds get. A Dockerfile build's base image is `<base repository>:<build key>`; a reference
// source's base is the reference resolved to its digest. The workspace image is named from the base
// exactly as Gitpod's image-builder names it (sha256 of the base reference and the constant "2"), so a
// workspace image either builder made is found by the other.
import { createHash } from 'node:crypto';

/** Gitpod's workspaceBuildProcessVersion; raising it would rename every workspace image. */
export const WORKSPACE_BUILD_VERSION = '2';

export function workspaceRef(workspaceRepository: string, baseRef: string): string {
  const tag = createHash('sha256').update(`${baseRef}\n${WORKSPACE_BUILD_VERSION}\n`).digest('hex');
  return `${workspaceRepository}:${tag}`;
}

export function dockerfileBaseRef(baseRepository: string, key: string): string {
  return `${baseRepository}:${key}`;
}
