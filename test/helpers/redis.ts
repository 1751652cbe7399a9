// A private redis-server (Debian's) on 127.0.0.1 and a free port, no persistence; stopped after the test.
import { freePort, isListening } from './ports.ts';
import { type AfterHook, type ServerProcess, spawnServer } from './process.ts';

export interface TestRedis {
  url: string;
  server: ServerProcess;
}

export async function startRedis(t: AfterHook): Promise<TestRedis> {
  const port = await freePort();
  const server = await spawnServer(
    'redis-server',
    ['--bind', '127.0.0.1', '--port', String(port), '--save', '', '--appendonly', 'no'],
    { readyCheck: () => isListening(port), t, name: 'redis-server' },
  );
  return { url: `redis://127.0.0.1:${port}`, server };
}
