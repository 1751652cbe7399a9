// The one parser of `host:port` strings: registry domains (port optional), listen and metrics addresses
// (port required). IPv6 hosts come in brackets when a port follows.
import { isIP } from 'node:net';

/** Splits `host[:port]` (with `[v6]` brackets) into the hostname without brackets and the port. */
export function splitHostPort(host: string): { hostname: string; port?: string } {
  if (host.startsWith('[')) {
    const end = host.indexOf(']');
    if (end > 0) {
      const rest = host.slice(end + 1);
      return rest.startsWith(':')
        ? { hostname: host.slice(1, end), port: rest.slice(1) }
        : { hostname: host.slice(1, end) };
    }
  }
  // A bare IPv6 address has several colons and no port.
  if (isIP(host) === 6) return { hostname: host };
  const i = host.lastIndexOf(':');
  return i < 0 ? { hostname: host } : { hostname: host.slice(0, i), port: host.slice(i + 1) };
}

/** `host:port`, with an IPv6 host in brackets: the inverse of splitHostPort. */
export function joinHostPort(host: string, port: number | string): string {
  return host.includes(':') ? `[${host}]:${port}` : `${host}:${port}`;
}

/** Whether a listen host means every interface. */
export function isAnyHost(host: string): boolean {
  return host === '' || host === '0.0.0.0' || host === '::';
}

/**
 * `HOST:PORT` or `[V6HOST]:PORT` with a port from 0 to 65535; undefined when `value` is not one. An empty
 * host (`:PORT`) is taken only when `anyHost` names what it means (e.g. every interface).
 */
export function parseHostPort(value: string, anyHost?: string): { host: string; port: number } | undefined {
  const { hostname, port } = splitHostPort(value);
  if (port === undefined || !/^\d{1,5}$/.test(port) || Number(port) > 65535) return undefined;
  // A colon outside brackets, or a bracket left over, is no host.
  if (/[[\]]/.test(hostname) || (hostname.includes(':') && !value.startsWith('['))) return undefined;
  if (value.startsWith('[') && isIP(hostname) !== 6) return undefined;
  if (hostname === '') return anyHost === undefined ? undefined : { host: anyHost, port: Number(port) };
  return { host: hostname, port: Number(port) };
}
