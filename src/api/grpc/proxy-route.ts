// Which way a gRPC channel reaches its server: straight, or through an HTTP CONNECT proxy. Decided once, by
// the registry client's reading of HTTPS_PROXY and NO_PROXY (Go's rules: the uppercase name first, CIDR
// entries, loopback never proxied), which is what grpc-go applies to a channel (a request to
// `https://host:port`, TLS or not). grpc-js's own reading is switched off: it knows only the lowercase
// names (`grpc_proxy`, then `https_proxy`, then `http_proxy`; `no_grpc_proxy`, then `no_proxy`) and matches
// NO_PROXY entries as plain suffixes, IPv4 CIDRs aside, without exempting loopback. The decision is handed
// to grpc-js as the channel options its own proxy path sets: the channel dials the proxy and tunnels to
// the real target with CONNECT, naming it unresolved, as grpc-go does.
import { isIP } from 'node:net';
import type { ChannelOptions } from '@grpc/grpc-js';
import { failedPrecondition, invalidArgument } from '../../errors.ts';
import { joinHostPort, splitHostPort } from '../../host-port.ts';
import {
  type ProxyEnvironment,
  ProxySelector,
  processProxyEnvironment,
  redactProxy,
} from '../../registry/proxy.ts';

export interface ChannelRoute {
  /** The target to give grpc-js: the address, or the proxy's. */
  target: string;
  options: ChannelOptions;
  /** The proxy used, without credentials (for messages), when there is one. */
  via?: string;
}

/** gRPC's port when a target names none. */
const GRPC_DEFAULT_PORT = '443';

/** `host:port` of a target that is resolved by name (grpc-js's `dns` scheme, given or implied). */
function dnsAuthority(address: string): string | undefined {
  // Unix sockets and explicit address lists are never proxied (grpc-js and grpc-go agree).
  if (/^(unix|unix-abstract|ipv4|ipv6|vsock):/i.test(address)) return undefined;
  const dns = /^dns:(?:\/\/[^/]*\/)?(.*)$/i.exec(address);
  return dns ? dns[1] : address;
}

/**
 * The server as the proxy rules read it. An address that is no host and port is refused here, whether or
 * not a proxy is set, rather than as the URL parser's bare "Invalid URL" or as a URL of some other host
 * (`user@host`, `host/path`), which NO_PROXY would be matched against.
 */
function serverUrl(address: string, hostPort: string): URL {
  const url = URL.parse(`https://${hostPort}`);
  if (!url || url.username || url.password || url.pathname !== '/' || url.search || url.hash)
    throw invalidArgument(`gRPC server address must be HOST[:PORT], got ${JSON.stringify(address)}`);
  return url;
}

/**
 * The route of a channel to `address` under the proxy settings `env` (by default the process's, read once).
 * Throws FailedPrecondition for a proxy grpc-js cannot speak to (only plain-HTTP CONNECT proxies),
 * InvalidArgument for an address that is no host and port.
 */
export function channelRoute(
  address: string,
  env: ProxyEnvironment = processProxyEnvironment(),
): ChannelRoute {
  const direct: ChannelRoute = { target: address, options: { 'grpc.enable_http_proxy': 0 } };
  const authority = dnsAuthority(address);
  if (!authority) return direct;
  const { hostname, port = GRPC_DEFAULT_PORT } = splitHostPort(authority);
  if (!hostname) return direct;
  const hostPort = joinHostPort(hostname, port);
  const proxy = new ProxySelector(env).proxyFor(serverUrl(address, hostPort));
  if (!proxy) return direct;
  if (proxy.protocol !== 'http:') {
    throw failedPrecondition(
      `gRPC to ${hostPort}: proxy ${redactProxy(proxy)} is not an http:// proxy, and gRPC reaches a ` +
        'proxy only in plain HTTP (CONNECT); name an http:// proxy in HTTPS_PROXY, or the host in NO_PROXY',
    );
  }
  if (isIP(hostname) === 6) {
    // grpc-js writes the tunnel's end as host:port with the brackets taken off (`CONNECT 2001:db8::1:5051`),
    // which is no authority: proxies refuse it or read another port. Said here rather than as a failed
    // connection with no reason given.
    throw failedPrecondition(
      `gRPC to ${hostPort}: the gRPC library cannot name an IPv6 address to proxy ${redactProxy(proxy)} ` +
        '(it leaves out the brackets); name the address in NO_PROXY, or the server by a host name',
    );
  }
  const user = proxy.username ? decodeURIComponent(proxy.username) : '';
  const creds = proxy.password ? `${user}:${decodeURIComponent(proxy.password)}` : user;
  return {
    target: `dns:${proxy.hostname}:${proxy.port || '80'}`,
    options: {
      'grpc.enable_http_proxy': 0,
      // What grpc-js sets itself when it picks a proxy: the tunnel's end, the :authority and TLS name of
      // the real server, and the proxy's Basic credentials.
      'grpc.http_connect_target': `dns:${hostPort}`,
      // As the address wrote it: one without a port is `host`, as it is to grpc-js going straight and to
      // grpc-go either way; only the tunnel names the port.
      'grpc.default_authority': authority,
      ...(creds && { 'grpc.http_connect_creds': creds }),
    },
    via: redactProxy(proxy),
  };
}
