// Which outgoing requests go through a proxy, read from HTTP_PROXY, HTTPS_PROXY and NO_PROXY as Go's
// net/http (ProxyFromEnvironment, golang.org/x/net/http/httpproxy) reads them, so Strata reaches a
// registry exactly when containerd, skopeo and buildah on the same machine do. Pure: no sockets here;
// http.ts routes each request by what this says.
import { BlockList, isIP } from 'node:net';
import { domainToASCII } from 'node:url';
import { failedPrecondition } from '../errors.ts';
import { splitHostPort } from '../host-port.ts';

/** The proxy settings as found in the environment (unparsed). */
export interface ProxyEnvironment {
  /** For `http://` requests. */
  httpProxy?: string;
  /** For `https://` requests. */
  httpsProxy?: string;
  /** Comma-separated hosts, domains, IPs, CIDRs (each optionally with `:port`) reached directly, or `*`. */
  noProxy?: string;
  /** Running as a CGI program (REQUEST_METHOD is set), where HTTP_PROXY may be a client's `Proxy:` header. */
  cgi?: boolean;
}

type Env = Readonly<Record<string, string | undefined>>;

/**
 * The value of the proxy variable `name` (an uppercase name) in `env`, as Go reads it: the uppercase name
 * wins over the lowercase one, and an empty variable counts as unset.
 */
export function proxyVariable(env: Env, name: string): string | undefined {
  return env[name] || env[name.toLowerCase()] || undefined;
}

/** The settings in `env`, each read as proxyVariable does. */
export function proxyEnvironment(env: Env): ProxyEnvironment {
  const httpProxy = proxyVariable(env, 'HTTP_PROXY');
  const httpsProxy = proxyVariable(env, 'HTTPS_PROXY');
  const noProxy = proxyVariable(env, 'NO_PROXY');
  return {
    ...(httpProxy ? { httpProxy } : {}),
    ...(httpsProxy ? { httpsProxy } : {}),
    ...(noProxy ? { noProxy } : {}),
    cgi: Boolean(env.REQUEST_METHOD),
  };
}

let processSettings: ProxyEnvironment | undefined;

/**
 * The process's settings, read from process.env on first use and kept for the life of the process, as Go
 * reads them once: the first registry client is made while a command or service starts.
 */
export function processProxyEnvironment(): ProxyEnvironment {
  processSettings ??= proxyEnvironment(process.env);
  return processSettings;
}

/** A proxy URL without its credentials (and path), fit for messages and logs. */
export function redactProxy(proxy: URL): string {
  return `${proxy.protocol}//${proxy.host}`;
}

const GO_PROXY_SCHEMES = new Set(['http:', 'https:', 'socks5:']);
const SUPPORTED_SCHEMES = new Set(['http:', 'https:']);

/**
 * A proxy variable's value as a URL. As in Go, a value without one of the schemes Go knows (`proxy:3128`)
 * is taken as `http://` + value, and a value that does not parse either way is ignored.
 */
export function parseProxyUrl(value: string | undefined): URL | undefined {
  if (!value) return undefined;
  let parsed: URL | undefined;
  try {
    parsed = new URL(value);
  } catch {
    parsed = undefined;
  }
  if (parsed && GO_PROXY_SCHEMES.has(parsed.protocol)) return parsed;
  try {
    return new URL(`http://${value}`);
  } catch {
    return undefined;
  }
}

function ipOf(host: string): 4 | 6 | undefined {
  // A zone (`fe80::1%eth0`) is no address to Go's ParseIP.
  if (host.includes('%')) return undefined;
  const v = isIP(host);
  return v === 4 || v === 6 ? v : undefined;
}

const family = (v: 4 | 6): 'ipv4' | 'ipv6' => (v === 4 ? 'ipv4' : 'ipv6');

// Go's IP.IsLoopback: 127.0.0.0/8 (also written IPv4-mapped, ::ffff:127.x.y.z) and ::1.
const LOOPBACK = new BlockList();
LOOPBACK.addSubnet('127.0.0.0', 8, 'ipv4');
LOOPBACK.addAddress('::1', 'ipv6');

type Matcher = (host: string, port: string, ip: 4 | 6 | undefined) => boolean;

function ipMatcher(list: BlockList, port: string): Matcher {
  return (host, p, ip) => ip !== undefined && list.check(host, family(ip)) && (!port || port === p);
}

/** One NO_PROXY entry as a matcher, or undefined for an entry Go ignores. */
function noProxyEntry(raw: string): Matcher | undefined {
  const entry = raw.trim().toLowerCase();
  if (!entry) return undefined;
  // `addr/bits`: an IPv4 or IPv6 network.
  const slash = entry.indexOf('/');
  if (slash >= 0) {
    const addr = entry.slice(0, slash);
    const bits = entry.slice(slash + 1);
    const v = ipOf(addr);
    if (v === undefined || !/^\d{1,3}$/.test(bits) || Number(bits) > (v === 4 ? 32 : 128)) return undefined;
    const list = new BlockList();
    list.addSubnet(addr, Number(bits), family(v));
    return ipMatcher(list, '');
  }
  const { hostname, port = '' } = splitHostPort(entry);
  if (!hostname) return undefined;
  const v = ipOf(hostname);
  if (v !== undefined) {
    const list = new BlockList();
    list.addAddress(hostname, family(v));
    return ipMatcher(list, port);
  }
  // `example.com` is that host and every name under it; `.example.com` and `*.example.com` only the names
  // under it. A plain suffix test, as Go's: `.com` bypasses every .com host.
  const subdomainsOnly = hostname.startsWith('.') || hostname.startsWith('*.');
  const bare = hostname.replace(/^\*?\./, '');
  // Go converts only names that are not ASCII already (request hosts come punycoded from URL).
  const domain = /[^\x00-\x7f]/.test(bare) ? domainToASCII(bare) || bare : bare;
  const suffix = `.${domain}`;
  return (host, p) =>
    (host.endsWith(suffix) || (!subdomainsOnly && host === domain)) && (!port || port === p);
}

const DEFAULT_PORTS: Record<string, string> = { 'http:': '80', 'https:': '443' };

/**
 * Picks the proxy of each request. Go's rules: `http://` requests use HTTP_PROXY, `https://` requests
 * HTTPS_PROXY (never the other); NO_PROXY names what goes direct; and, whatever NO_PROXY says, requests to
 * `localhost` and to loopback addresses (127.0.0.0/8, ::1) never go through a proxy. Names are not
 * resolved: a NO_PROXY IP or network matches only requests that name an address.
 */
export class ProxySelector {
  private readonly http: URL | undefined;
  private readonly https: URL | undefined;
  private readonly cgi: boolean;
  private readonly matchers: Matcher[] = [];
  private readonly bypassAll: boolean;

  constructor(env: ProxyEnvironment) {
    this.http = parseProxyUrl(env.httpProxy);
    this.https = parseProxyUrl(env.httpsProxy);
    this.cgi = env.cgi === true;
    const entries = (env.noProxy ?? '').split(',');
    this.bypassAll = entries.some((e) => e.trim() === '*');
    for (const e of entries) {
      const m = noProxyEntry(e);
      if (m) this.matchers.push(m);
    }
  }

  /** Whether any request could go through a proxy. */
  get configured(): boolean {
    return (this.http !== undefined || this.https !== undefined) && !this.bypassAll;
  }

  /**
   * The proxy for a request to `url`, or undefined to go direct. Throws FailedPrecondition where Go's
   * transport refuses: HTTP_PROXY under CGI (httpoxy), and a proxy scheme Strata cannot speak (socks5).
   */
  proxyFor(url: URL): URL | undefined {
    let proxy: URL | undefined;
    if (url.protocol === 'https:') proxy = this.https;
    else if (url.protocol === 'http:') {
      proxy = this.http;
      // Go refuses before looking at NO_PROXY, so under CGI every plain-HTTP request fails, loopback too.
      if (proxy && this.cgi) {
        throw failedPrecondition(
          'refusing to use HTTP_PROXY while REQUEST_METHOD is set: in a CGI program it may come from a ' +
            "client's Proxy header (httpoxy)",
        );
      }
    }
    if (!proxy || !this.useProxy(url)) return undefined;
    if (!SUPPORTED_SCHEMES.has(proxy.protocol)) {
      throw failedPrecondition(
        `proxy ${redactProxy(proxy)} for ${url.protocol}// requests: only http:// and https:// proxies are supported`,
      );
    }
    return proxy;
  }

  /** Whether a request to `url` goes through its scheme's proxy, as far as the host is concerned. */
  private useProxy(url: URL): boolean {
    const host = url.hostname.replace(/^\[(.*)\]$/, '$1');
    const port = url.port || DEFAULT_PORTS[url.protocol] || '';
    const ip = ipOf(host);
    // Go never proxies these, and neither does Strata: a loopback registry is on this machine.
    if (host === 'localhost' || (ip !== undefined && LOOPBACK.check(host, family(ip)))) return false;
    if (this.bypassAll) return false;
    return !this.matchers.some((m) => m(host, port, ip));
  }
}
