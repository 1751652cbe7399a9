// Image references (`[domain/]path[:tag][@digest]`) with the grammar of the distribution project, the
// Docker Hub normalisation (`ubuntu` → `docker.io/library/ubuntu`) and the short form docker prints.
// Error messages start with distribution's own wording so users recognise them, then say what is wrong.
import { invalidArgument } from '../errors.ts';
import { type Digest, parseDigest } from './digest.ts';

export interface Reference {
  /** Registry host with optional port; '' when the reference named none (before normalisation). */
  domain: string;
  /** Repository path inside the registry, e.g. `library/ubuntu`. */
  path: string;
  tag?: string;
  digest?: Digest;
}

export const DEFAULT_DOMAIN = 'docker.io';
export const DEFAULT_TAG = 'latest';
export const MAX_NAME_LENGTH = 255;
export const MAX_TAG_LENGTH = 128;

// Hosts that mean Docker Hub; references through them are the same images as through docker.io.
const DOCKER_HUB_ALIASES = new Set(['docker.io', 'index.docker.io', 'registry-1.docker.io']);
const OFFICIAL_PREFIX = 'library/';

const PATH_COMPONENT_RE = /^[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*$/;
const TAG_RE = /^\w[\w.-]*$/;
const DOMAIN_COMPONENT = '(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])';
const DOMAIN_RE = new RegExp(
  `^(?:${DOMAIN_COMPONENT}(?:\\.${DOMAIN_COMPONENT})*|\\[[a-fA-F0-9:]+\\])(?::[0-9]+)?$`,
);
// A bare image ID; docker refuses it as a name so that `docker pull <id>` cannot be mistaken for one.
const IMAGE_ID_RE = /^[a-f0-9]{64}$/;

function fail(reason: string, input: string, detail?: string): never {
  throw invalidArgument(`${reason}: ${JSON.stringify(input)}${detail ? `: ${detail}` : ''}`);
}

/** Whether the first `/`-separated component names a registry rather than a repository component. */
function looksLikeDomain(component: string): boolean {
  return (
    component.includes('.') ||
    component.includes(':') ||
    component === 'localhost' ||
    component !== component.toLowerCase()
  );
}

export function isValidTag(tag: string): boolean {
  return tag.length <= MAX_TAG_LENGTH && TAG_RE.test(tag);
}

export function isValidDomain(domain: string): boolean {
  return DOMAIN_RE.test(domain);
}

/** A repository path as it appears after the domain (`library/ubuntu`), length limit excluded. */
export function isValidRepositoryPath(path: string): boolean {
  return path.split('/').every((c) => PATH_COMPONENT_RE.test(c));
}

function checkTag(tag: string, input: string): void {
  if (tag === '') fail('invalid tag format', input, 'empty tag');
  if (tag.length > MAX_TAG_LENGTH) {
    fail('invalid tag format', input, `tag is longer than ${MAX_TAG_LENGTH} characters`);
  }
  if (!TAG_RE.test(tag)) {
    fail('invalid tag format', input, 'a tag is a word character followed by word characters, "." or "-"');
  }
}

function checkPath(path: string, input: string): void {
  if (path === '') fail('invalid reference format', input, 'missing repository path');
  for (const c of path.split('/')) {
    if (c === '') fail('invalid reference format', input, 'empty path component');
    if (PATH_COMPONENT_RE.test(c)) continue;
    if (PATH_COMPONENT_RE.test(c.toLowerCase())) fail('repository name must be lowercase', input);
    fail('invalid reference format', input, `invalid path component ${JSON.stringify(c)}`);
  }
}

/**
 * Parses a reference with the strict grammar: nothing is added. `domain` is '' when the first component
 * does not look like a host (no '.', ':' or uppercase, and not `localhost`).
 */
export function parseReference(s: string): Reference {
  if (s === '') fail('repository name must have at least one component', s);

  let rest = s;
  let digestPart: string | undefined;
  const at = s.indexOf('@');
  if (at >= 0) {
    digestPart = s.slice(at + 1);
    rest = s.slice(0, at);
  }

  // A tag colon can only follow the last '/': earlier colons belong to the domain's port.
  let name = rest;
  let tag: string | undefined;
  const colon = rest.indexOf(':', rest.lastIndexOf('/') + 1);
  if (colon >= 0) {
    name = rest.slice(0, colon);
    tag = rest.slice(colon + 1);
  }

  if (name === '') fail('invalid reference format', s, 'missing repository name');
  let domain = '';
  let path = name;
  const slash = name.indexOf('/');
  if (slash >= 0 && looksLikeDomain(name.slice(0, slash))) {
    domain = name.slice(0, slash);
    path = name.slice(slash + 1);
    if (!DOMAIN_RE.test(domain)) {
      fail('invalid reference format', s, `invalid registry host ${JSON.stringify(domain)}`);
    }
  }
  checkPath(path, s);
  if (name.length > MAX_NAME_LENGTH) {
    fail(`repository name must not be more than ${MAX_NAME_LENGTH} characters`, s);
  }
  if (tag !== undefined) checkTag(tag, s);

  const ref: Reference = { domain, path };
  if (tag !== undefined) ref.tag = tag;
  if (digestPart !== undefined) {
    try {
      ref.digest = parseDigest(digestPart);
    } catch (err) {
      fail('invalid digest format', s, (err as Error).message);
    }
  }
  return ref;
}

/**
 * Parses a reference as docker does for user input: no domain means Docker Hub, whose aliases become
 * `docker.io`, and a single-component Hub name gains `library/`. No default tag is added.
 */
export function parseNormalizedReference(s: string): Reference {
  if (IMAGE_ID_RE.test(s)) {
    fail('invalid reference format', s, 'a 64-character hexadecimal string is an image ID, not a name');
  }
  const ref = parseReference(s);
  if (ref.domain === '' || DOCKER_HUB_ALIASES.has(ref.domain)) {
    ref.domain = DEFAULT_DOMAIN;
    if (!ref.path.includes('/')) ref.path = OFFICIAL_PREFIX + ref.path;
  }
  // The limit applies to the name as the registry sees it.
  if (repositoryName(ref).length > MAX_NAME_LENGTH) {
    fail(`repository name must not be more than ${MAX_NAME_LENGTH} characters`, s, 'once normalised');
  }
  return ref;
}

/** The reference with tag `latest` when it names neither tag nor digest. */
export function withDefaultTag(r: Reference): Reference {
  if (r.tag !== undefined || r.digest !== undefined) return r;
  return { ...r, tag: DEFAULT_TAG };
}

/** `domain/path`, or just the path when there is no domain. */
export function repositoryName(r: Reference): string {
  return r.domain === '' ? r.path : `${r.domain}/${r.path}`;
}

export function formatReference(r: Reference): string {
  let s = repositoryName(r);
  if (r.tag !== undefined) s += `:${r.tag}`;
  if (r.digest !== undefined) s += `@${r.digest}`;
  return s;
}

/**
 * The short form docker prints: Docker Hub's domain and `library/` dropped. Unlike docker, the domain is
 * kept when dropping it would make the first path component read as a host (`docker.io/foo.bar/baz`).
 */
export function familiarString(r: Reference): string {
  let name = repositoryName(r);
  if (r.domain === '' || DOCKER_HUB_ALIASES.has(r.domain)) {
    let path = r.path;
    if (path.startsWith(OFFICIAL_PREFIX) && !path.includes('/', OFFICIAL_PREFIX.length)) {
      path = path.slice(OFFICIAL_PREFIX.length);
    }
    const slash = path.indexOf('/');
    const ambiguous = slash >= 0 && looksLikeDomain(path.slice(0, slash));
    name = ambiguous ? `${DEFAULT_DOMAIN}/${path}` : path;
  }
  let s = name;
  if (r.tag !== undefined) s += `:${r.tag}`;
  if (r.digest !== undefined) s += `@${r.digest}`;
  return s;
}

/** What goes in `/v2/<name>/manifests/<reference>`: the digest when pinned, else the tag (default `latest`). */
export function referenceTarget(r: Reference): string {
  return r.digest ?? r.tag ?? DEFAULT_TAG;
}
