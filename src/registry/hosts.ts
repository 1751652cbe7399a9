// Where a registry domain is reached and how: the API host (Docker Hub's differs from its name), plain HTTP
// or TLS, and extra CA certificates. Credentials may only travel over TLS or to a loopback host.
import { isIP } from 'node:net';
import { splitHostPort } from '../host-port.ts';

export interface HostConfig {
  /** Hosts (`host` or `host:port`) reached over plain HTTP. Loopback hosts always are. */
  insecure?: readonly string[];
  /** Loopback hosts that nevertheless speak TLS. */
  tls?: readonly string[];
  /** Extra CA certificates (PEM) trusted for TLS, in addition to the system's. */
  ca?: readonly (string | Uint8Array)[];
}

export const DOCKER_HUB = 'docker.io';
const DOCKER_HUB_API = 'registry-1.docker.io';
const DOCKER_HUB_ALIASES = new Set(['docker.io', 'index.docker.io', 'registry-1.docker.io']);

export function isLoopbackHost(host: string): boolean {
  const { hostname } = splitHostPort(host.toLowerCase());
  if (hostname === 'localhost' || hostname.endsWith('.localhost')) return true;
  if (hostname === '::1' || hostname === '0:0:0:0:0:0:0:1') return true;
  if (isIP(hostname) === 4) return hostname.startsWith('127.');
  if (hostname.startsWith('::ffff:'))
    return isIP(hostname.slice(7)) === 4 && hostname.slice(7).startsWith('127.');
  return false;
}

/** The canonical name of a registry host: lowercased, Docker Hub's aliases folded into `docker.io`. */
export function canonicalHost(host: string): string {
  const h = host.toLowerCase();
  return DOCKER_HUB_ALIASES.has(h) ? DOCKER_HUB : h;
}

/** Whether a URL may carry credentials: TLS, or plain HTTP to this machine. */
export function credentialsAllowed(url: URL): boolean {
  return url.protocol === 'https:' || isLoopbackHost(url.host);
}

export class RegistryHosts {
  private readonly insecure: Set<string>;
  private readonly tls: Set<string>;
  readonly ca: readonly (string | Uint8Array)[] | undefined;

  constructor(config: HostConfig = {}) {
    this.insecure = new Set((config.insecure ?? []).map((h) => h.toLowerCase()));
    this.tls = new Set((config.tls ?? []).map((h) => h.toLowerCase()));
    this.ca = config.ca;
  }

  /** The host that serves the API of a registry domain. */
  apiHost(domain: string): string {
    return canonicalHost(domain) === DOCKER_HUB ? DOCKER_HUB_API : domain.toLowerCase();
  }

  /** Whether this domain is reached over plain HTTP. */
  isPlainHttp(domain: string): boolean {
    const host = this.apiHost(domain);
    if (this.tls.has(host)) return false;
    if (this.insecure.has(host) || this.insecure.has(splitHostPort(host).hostname)) return true;
    return isLoopbackHost(host);
  }

  /** `http(s)://host[:port]` of the registry API for a domain. */
  baseUrl(domain: string): URL {
    const scheme = this.isPlainHttp(domain) ? 'http' : 'https';
    return new URL(`${scheme}://${this.apiHost(domain)}`);
  }
}
