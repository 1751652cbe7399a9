// A forward proxy on loopback, as a corporate one: absolute-form HTTP requests are forwarded and CONNECT
// is tunnelled, to the names it is given only. Each name maps to a loopback host:port it alone knows (no
// DNS is asked), so a client that reached a test server by such a name went through this proxy; any other
// target is answered 502 without a connection being made.
import { createServer, request, type Server } from 'node:http';
import { type AddressInfo, connect, type Socket } from 'node:net';
import type { AfterHook } from './process.ts';

export interface ProxySeen {
  method: string;
  /** The absolute URL of a forwarded request, or `host:port` of a CONNECT. */
  target: string;
  proxyAuthorization?: string;
}

export interface ForwardProxyOptions {
  /** `name:port` as clients ask for it (the port always written) → `127.0.0.1:port` it reaches. */
  routes: Record<string, string>;
  /** When set, requests without exactly this Proxy-Authorization are answered 407. */
  authorization?: string;
  /** Answer every CONNECT with this status instead of tunnelling. */
  refuseConnect?: number;
  /** Accept connections and read requests, but never answer. */
  silent?: boolean;
  /** close() runs after the test, pass or fail. */
  t?: AfterHook;
}

export interface ForwardProxy {
  /** `http://127.0.0.1:PORT`. */
  url: string;
  port: number;
  seen: ProxySeen[];
  close(): Promise<void>;
}

const DEFAULT_PORT: Record<string, string> = { 'http:': '80', 'https:': '443' };

/**
 * This process's environment without any proxy settings of its own (either spelling, grpc-js's names
 * included, and the CGI marker Go reads), for a child process given exactly the test's. They are left
 * undefined rather than deleted, which a child's spawn skips: so the result also unsets them when merged
 * over process.env.
 */
export function envWithoutProxies(): NodeJS.ProcessEnv {
  const env = { ...process.env };
  for (const k of Object.keys(env)) {
    if (/^(https?|no|all|grpc|no_grpc)_proxy$/i.test(k) || k === 'REQUEST_METHOD') env[k] = undefined;
  }
  return env;
}

export async function startForwardProxy(opts: ForwardProxyOptions): Promise<ForwardProxy> {
  const seen: ProxySeen[] = [];
  const sockets = new Set<Socket>();
  const allowed = (auth: string | undefined): boolean =>
    opts.authorization === undefined || auth === opts.authorization;

  const server: Server = createServer((req, res) => {
    const auth = req.headers['proxy-authorization'];
    seen.push({
      method: req.method ?? '',
      target: req.url ?? '',
      ...(auth ? { proxyAuthorization: auth } : {}),
    });
    if (opts.silent) return;
    if (!allowed(auth)) {
      res.writeHead(407, { 'proxy-authenticate': 'Basic realm="test proxy"', 'content-length': 0 }).end();
      return;
    }
    let target: URL;
    try {
      target = new URL(req.url ?? '');
    } catch {
      res.writeHead(400, { 'content-length': 0 }).end();
      return;
    }
    const to = opts.routes[`${target.hostname}:${target.port || DEFAULT_PORT[target.protocol]}`];
    if (target.protocol !== 'http:' || !to) {
      res.writeHead(502, { 'content-length': 0 }).end();
      return;
    }
    const [host, port] = [to.slice(0, to.lastIndexOf(':')), Number(to.slice(to.lastIndexOf(':') + 1))];
    const headers = { ...req.headers };
    delete headers['proxy-authorization'];
    delete headers['proxy-connection'];
    const fwd = request({
      host,
      port,
      method: req.method,
      path: `${target.pathname}${target.search}`,
      headers,
    });
    fwd.on('response', (up) => {
      res.writeHead(up.statusCode ?? 502, up.headers);
      up.pipe(res);
    });
    fwd.on('error', () => res.destroy());
    req.pipe(fwd);
  });
  server.on('connection', (s: Socket) => {
    sockets.add(s);
    s.on('close', () => sockets.delete(s));
  });
  server.on('connect', (req, client: Socket, head: Buffer) => {
    const auth = req.headers['proxy-authorization'];
    seen.push({ method: 'CONNECT', target: req.url ?? '', ...(auth ? { proxyAuthorization: auth } : {}) });
    client.on('error', () => {});
    if (opts.silent) return;
    const answer = (status: string): void => {
      client.end(`HTTP/1.1 ${status}\r\ncontent-length: 0\r\n\r\n`);
    };
    if (!allowed(auth)) return answer('407 Proxy Authentication Required');
    if (opts.refuseConnect !== undefined) return answer(`${opts.refuseConnect} Refused`);
    const to = opts.routes[req.url ?? ''];
    if (!to) return answer('502 Bad Gateway');
    const up = connect(Number(to.slice(to.lastIndexOf(':') + 1)), to.slice(0, to.lastIndexOf(':')), () => {
      client.write('HTTP/1.1 200 Connection Established\r\n\r\n');
      if (head.length > 0) up.write(head);
      up.pipe(client);
      client.pipe(up);
    });
    sockets.add(up);
    up.on('close', () => sockets.delete(up));
    up.on('error', () => client.destroy());
    client.on('close', () => up.destroy());
  });

  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const port = (server.address() as AddressInfo).port;
  let closed: Promise<void> | undefined;
  const close = (): Promise<void> => {
    closed ??= new Promise<void>((resolve) => {
      for (const s of sockets) s.destroy();
      server.close(() => resolve());
    });
    return closed;
  };
  opts.t?.after(close);
  return { url: `http://127.0.0.1:${port}`, port, seen, close };
}
