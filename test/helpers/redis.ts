// A private redis-server (Debian's) on 127.0.0.1 and a free port, no persistence; stopped after the test.
// It can be stopped and started again on the same port (empty, as after a crash), and paused (SIGSTOP: the
// port still accepts connections and nothing answers) and resumed. Optionally it asks for a password, and
// speaks only TLS (with the given certificate; clients need none of their own).
import { freePort, isListening } from './ports.ts';
import { type AfterHook, type ServerProcess, spawnServer } from './process.ts';

export interface TestRedis {
  url: string;
  port: number;
  server: ServerProcess;
  stop(): Promise<void>;
  /** Starts it again on the same port, after stop(). */
  restart(): Promise<void>;
  pause(): void;
  resume(): void;
}

export interface RedisOptions {
  password?: string;
  tls?: { certFile: string; keyFile: string };
}

export async function startRedis(t: AfterHook, o: RedisOptions = {}): Promise<TestRedis> {
  const port = await freePort();
  const args = ['--bind', '127.0.0.1', '--save', '', '--appendonly', 'no'];
  if (o.password !== undefined) args.push('--requirepass', o.password);
  if (o.tls) {
    args.push('--port', '0', '--tls-port', String(port), '--tls-auth-clients', 'no');
    args.push('--tls-cert-file', o.tls.certFile, '--tls-key-file', o.tls.keyFile);
  } else {
    args.push('--port', String(port));
  }
  const spawn = () =>
    spawnServer('redis-server', args, { readyCheck: () => isListening(port), t, name: 'redis-server' });
  const signal = (s: NodeJS.Signals) => {
    const pid = redis.server.proc.pid;
    if (pid !== undefined && redis.server.proc.exitCode === null) process.kill(pid, s);
  };
  const redis: TestRedis = {
    url: `${o.tls ? 'rediss' : 'redis'}://127.0.0.1:${port}`,
    port,
    server: await spawn(),
    stop: async () => {
      signal('SIGCONT');
      await redis.server.stop();
    },
    restart: async () => {
      redis.server = await spawn();
    },
    pause: () => signal('SIGSTOP'),
    resume: () => signal('SIGCONT'),
  };
  // A paused server must be able to take its SIGTERM.
  t.after(() => signal('SIGCONT'));
  return redis;
}
