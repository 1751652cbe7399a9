// nginx (Debian's nginx-light) as a static-file anchor for benchmarks: our own config in a temp dir, one
// free loopback port, `daemon off;` in its own process group, sendfile on, no access log.
import { mkdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { freePort } from '../test/helpers/ports.ts';
import { type ServerProcess, spawnServer } from '../test/helpers/process.ts';
import { removeTempDir, tempDir } from '../test/helpers/tmp.ts';

export interface Nginx {
  /** `http://127.0.0.1:PORT`; a file `root/x` is at `${url}/x`. */
  url: string;
  stop(): Promise<void>;
}

export async function startNginx(root: string): Promise<Nginx> {
  const dir = await tempDir('nginx');
  let server: ServerProcess | undefined;
  let url = '';
  try {
    const port = await freePort();
    for (const d of ['body', 'proxy', 'fastcgi', 'uwsgi', 'scgi']) await mkdir(join(dir, d));
    const conf = join(dir, 'nginx.conf');
    await writeFile(
      conf,
      [
        'daemon off;',
        'user root;',
        'worker_processes auto;',
        `pid ${join(dir, 'nginx.pid')};`,
        `error_log ${join(dir, 'error.log')} warn;`,
        'events { worker_connections 1024; }',
        'http {',
        '  access_log off;',
        '  sendfile on;',
        '  tcp_nopush on;',
        '  default_type application/octet-stream;',
        `  client_body_temp_path ${join(dir, 'body')};`,
        `  proxy_temp_path ${join(dir, 'proxy')};`,
        `  fastcgi_temp_path ${join(dir, 'fastcgi')};`,
        `  uwsgi_temp_path ${join(dir, 'uwsgi')};`,
        `  scgi_temp_path ${join(dir, 'scgi')};`,
        '  server {',
        `    listen 127.0.0.1:${port};`,
        `    root ${root};`,
        '  }',
        '}',
        '',
      ].join('\n'),
    );
    url = `http://127.0.0.1:${port}`;
    server = await spawnServer('nginx', ['-p', dir, '-e', join(dir, 'error.log'), '-c', conf], {
      name: 'nginx',
      logFile: join(dir, 'nginx.out'),
      readyCheck: async () => {
        const res = await fetch(`${url}/`, { signal: AbortSignal.timeout(1000) });
        await res.body?.cancel();
        return res.status > 0;
      },
    });
  } catch (err) {
    await server?.stop();
    await removeTempDir(dir);
    throw err;
  }
  const s = server;
  return {
    url,
    stop: async () => {
      await s.stop();
      await removeTempDir(dir);
    },
  };
}
