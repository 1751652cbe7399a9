// Platforms (`os/arch[/variant]`): parsing the specifiers users type, normalising the many spellings of an
// architecture, and choosing the manifest of an index that a host can run, the way containerd does.
import { endianness } from 'node:os';
import { invalidArgument } from '../errors.ts';
import type { Platform } from './descriptor.ts';

const KNOWN_OS = new Set([
  'aix',
  'android',
  'darwin',
  'dragonfly',
  'freebsd',
  'hurd',
  'illumos',
  'ios',
  'js',
  'linux',
  'nacl',
  'netbsd',
  'openbsd',
  'plan9',
  'solaris',
  'wasip1',
  'windows',
  'zos',
]);

const KNOWN_ARCH = new Set([
  '386',
  'amd64',
  'amd64p32',
  'arm',
  'armbe',
  'arm64',
  'arm64be',
  'loong64',
  'mips',
  'mipsle',
  'mips64',
  'mips64le',
  'mips64p32',
  'mips64p32le',
  'ppc',
  'ppc64',
  'ppc64le',
  'riscv',
  'riscv64',
  's390',
  's390x',
  'sparc',
  'sparc64',
  'wasm',
]);

// '.' appears in arm64 variants such as v8.2.
const COMPONENT_RE = /^[A-Za-z0-9][A-Za-z0-9_.-]*$/;
const OS_AND_VERSION_RE = /^([A-Za-z0-9_-]+)(?:\(([A-Za-z0-9_.-]*)\))?$/;

function bad(s: string, why: string): never {
  throw invalidArgument(`invalid platform ${JSON.stringify(s)}: ${why}`);
}

/**
 * Parses `os[(os.version)]/arch[/variant]`, or a lone OS (the host's architecture is assumed) or a lone
 * architecture (linux is assumed). The result is normalised, so `linux/arm` gives variant `v7`.
 */
export function parsePlatform(s: string): Platform {
  if (s === '') bad(s, 'empty');
  const parts = s.split('/');
  if (parts.length > 3) bad(s, 'want os/arch[/variant]');
  const osMatch = OS_AND_VERSION_RE.exec(parts[0]!);
  if (!osMatch) bad(s, `invalid OS component ${JSON.stringify(parts[0])}`);
  for (const part of parts.slice(1)) {
    if (!COMPONENT_RE.test(part)) bad(s, `invalid component ${JSON.stringify(part)}`);
  }
  const os = osMatch[1]!;
  const osVersion = osMatch[2];

  let p: Platform;
  if (parts.length === 1) {
    const host = hostPlatform();
    if (KNOWN_OS.has(normalizeOS(os))) {
      p = { ...host, os };
    } else if (osVersion === undefined && KNOWN_ARCH.has(normalizeArch(os, '').architecture)) {
      p = { os: host.os, architecture: os };
    } else {
      bad(s, 'unknown operating system or architecture');
    }
  } else {
    p = { os, architecture: parts[1]! };
    if (parts[2] !== undefined) p.variant = parts[2];
  }
  if (osVersion) p['os.version'] = osVersion;
  return normalizePlatform(p);
}

function normalizeOS(os: string): string {
  const lower = os.toLowerCase();
  return lower === 'macos' ? 'darwin' : lower;
}

function normalizeArch(arch: string, variant: string): { architecture: string; variant: string } {
  const a = arch.toLowerCase();
  const v = variant.toLowerCase();
  switch (a) {
    case 'i386':
    case 'i686':
      return { architecture: '386', variant: '' };
    case 'x86_64':
    case 'x86-64':
    case 'amd64':
      return { architecture: 'amd64', variant: v === 'v1' ? '' : v };
    case 'aarch64':
    case 'arm64':
      if (v === '8' || v === 'v8' || v === 'v8.0') return { architecture: 'arm64', variant: '' };
      if (v === '9' || v === 'v9.0') return { architecture: 'arm64', variant: 'v9' };
      return { architecture: 'arm64', variant: v };
    case 'armhf':
    case 'armv7l':
      return { architecture: 'arm', variant: 'v7' };
    case 'armel':
    case 'armv6l':
      return { architecture: 'arm', variant: 'v6' };
    case 'arm':
      if (v === '' || v === '7') return { architecture: 'arm', variant: 'v7' };
      if (v === '5' || v === '6' || v === '8') return { architecture: 'arm', variant: `v${v}` };
      return { architecture: 'arm', variant: v };
    case 'ppc64el':
      return { architecture: 'ppc64le', variant: v };
    default:
      return { architecture: a, variant: v };
  }
}

/** The canonical spelling: lowercase, `x86_64` → `amd64`, `aarch64` → `arm64` (v8 implied), `arm` → `arm/v7`… */
export function normalizePlatform(p: Platform): Platform {
  const { architecture, variant } = normalizeArch(p.architecture, p.variant ?? '');
  const out: Platform = { ...p, os: normalizeOS(p.os), architecture };
  if (variant === '') delete out.variant;
  else out.variant = variant;
  if (out['os.version'] === '') delete out['os.version'];
  return out;
}

/** `os[(os.version)]/arch[/variant]`, the form parsePlatform reads. */
export function formatPlatform(p: Platform): string {
  if (p.os === '') return 'unknown';
  let s = p['os.version'] ? `${p.os}(${p['os.version']})` : p.os;
  s += `/${p.architecture}`;
  if (p.variant) s += `/${p.variant}`;
  return s;
}

function variantsOf(architecture: string, from: number, to: number, base: Platform): Platform[] {
  const out: Platform[] = [];
  for (let n = from; n >= to; n--) out.push(normalizePlatform({ ...base, architecture, variant: `v${n}` }));
  return out;
}

/**
 * What a host of platform `want` can run, best first: itself, then older variants of its architecture,
 * then the 32-bit architecture it can also execute (amd64 → 386, arm64 → arm/v8 … arm/v5).
 */
function compatibleWith(want: Platform): Platform[] {
  const base: Platform = { os: want.os, architecture: want.architecture };
  if (want['os.version'] !== undefined) base['os.version'] = want['os.version'];
  const vector: Platform[] = [want];
  const version = /^v(\d+)(?:\.(\d+))?$/.exec(want.variant ?? '');
  switch (want.architecture) {
    case 'amd64': {
      // amd64 without a variant is v1, the baseline.
      if (version && version[2] === undefined)
        vector.push(...variantsOf('amd64', Number(version[1]) - 1, 1, base));
      vector.push({ ...base, architecture: '386' });
      break;
    }
    case 'arm': {
      if (version && version[2] === undefined)
        vector.push(...variantsOf('arm', Number(version[1]) - 1, 5, base));
      break;
    }
    case 'arm64': {
      // arm64 without a variant is v8. v9.x implements v8.(x+5); every v8.x runs arm/v8 (32-bit) code.
      const m = want.variant === undefined ? ['v8', '8', undefined] : version;
      if (!m) break;
      let major = Number(m[1]);
      let minor = m[2] === undefined ? 0 : Number(m[2]);
      const push = (maj: number, min: number) =>
        vector.push(
          normalizePlatform({
            ...base,
            architecture: 'arm64',
            variant: min === 0 ? `v${maj}` : `v${maj}.${min}`,
          }),
        );
      if (major === 9) {
        for (let n = minor - 1; n >= 0; n--) push(9, n);
        minor = Math.min(minor + 5, 9);
        major = 8;
        push(8, minor);
      }
      if (major === 8) for (let n = minor - 1; n >= 0; n--) push(8, n);
      if (major === 8 || major === 9) {
        vector.push(normalizePlatform({ ...base, architecture: 'arm', variant: 'v8' }));
        vector.push(...variantsOf('arm', 7, 5, base));
      }
      break;
    }
  }
  return vector;
}

// Windows images must share the host's major.minor.build; other OSes do not version their images.
function sameOSVersion(want: Platform, have: Platform): boolean {
  const w = want['os.version'];
  const h = have['os.version'];
  if (want.os !== 'windows' || !w || !h) return true;
  const build = (v: string) => v.split('.').slice(0, 3).join('.');
  return build(w) === build(h);
}

function rank(want: Platform, have: Platform): number {
  const h = normalizePlatform(have);
  const vector = compatibleWith(normalizePlatform(want));
  return vector.findIndex(
    (v) =>
      v.os === h.os &&
      v.architecture === h.architecture &&
      (v.variant ?? '') === (h.variant ?? '') &&
      sameOSVersion(v, h),
  );
}

/** Whether a host of platform `want` can run an image built for `have`. */
export function platformMatches(want: Platform, have: Platform): boolean {
  return rank(want, have) >= 0;
}

/**
 * The candidate a host of platform `want` runs best: its exact platform first, then compatible older
 * variants and 32-bit architectures; the first listed wins a tie. Candidates without a platform are
 * skipped, since only their config could tell what they are.
 */
export function bestPlatformMatch<T extends { platform?: Platform }>(
  want: Platform,
  candidates: readonly T[],
): T | undefined {
  let best: T | undefined;
  let bestRank = Number.POSITIVE_INFINITY;
  for (const c of candidates) {
    if (c.platform === undefined) continue;
    const r = rank(want, c.platform);
    if (r >= 0 && r < bestRank) {
      best = c;
      bestRank = r;
    }
  }
  return best;
}

function hostArchitecture(): Platform {
  switch (process.arch) {
    case 'x64':
      return { os: 'linux', architecture: 'amd64' };
    case 'ia32':
      return { os: 'linux', architecture: '386' };
    case 'arm': {
      const armVersion = (process.config.variables as Record<string, unknown>).arm_version;
      return { os: 'linux', architecture: 'arm', variant: `v${String(armVersion ?? '7')}` };
    }
    case 'ppc64':
      // Node names both endiannesses ppc64; images name the little-endian one ppc64le.
      return { os: 'linux', architecture: endianness() === 'LE' ? 'ppc64le' : 'ppc64' };
    case 'mipsel':
      return { os: 'linux', architecture: 'mipsle' };
    default:
      return { os: 'linux', architecture: process.arch };
  }
}

/** linux and the architecture of the machine we run on, normalised: the images this host runs. */
export function hostPlatform(): Platform {
  return normalizePlatform(hostArchitecture());
}

/** The platform to pull and unpack when none is asked for. */
export const defaultPlatform = hostPlatform;
