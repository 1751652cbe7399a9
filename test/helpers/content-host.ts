// A remote content-layer host for facade tests: serves named bodies over plain HTTP on 127.0.0.1, counts
// requests per path, and can hold a body back (all but its last byte until release()) or count the
// connections that closed before their answer was complete. Also the layer tars such a host serves.
import { createHash } from 'node:crypto';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { pack as tarPack } from 'tar-stream';

export function sha256(b: Uint8Array): string {
  return `sha256:${createHash('sha256').update(b).digest('hex')}`;
}

/** An uncompressed tar with `dir/` entries before the files (as real layers have them). */
export async function tarOf(files: Record<string, string>): Promise<Buffer> {
  const p = tarPack();
  const dirs = new Set<string>();
  for (const [name, body] of Object.entries(files)) {
    const parts = name.split('/');
    for (let i = 1; i < parts.length; i++) {
      const d = `${parts.slice(0, i).join('/')}/`;
      if (!dirs.has(d)) {
        dirs.add(d);
        p.entry({ name: d, type: 'directory', mode: 0o755, mtime: new Date(0) });
      }
    }
    p.entry({ name, mode: 0o644, mtime: new Date(0) }, body);
  }
  p.finalize();
  const chunks: Buffer[] = [];
  for await (const c of p) chunks.push(c as Buffer);
  return Buffer.concat(chunks);
}

/** Plays a content-layer host: serves named bodies; `held` bodies wait for release() before the last byte. */
export class ContentHost {
  readonly bodies = new Map<string, Buffer>();
  readonly requests = new Map<string, number>();
  /** Answers whose connection closed before the whole body was sent, per path. */
  readonly cut = new Map<string, number>();
  private held = new Map<string, (() => void)[]>();
  private holding = new Set<string>();
  private server: Server | undefined;
  port = 0;

  async start(): Promise<void> {
    this.server = createServer((req, res) => void this.answer(req, res));
    await new Promise<void>((r) => this.server!.listen(0, '127.0.0.1', r));
    this.port = (this.server.address() as AddressInfo).port;
  }

  get host(): string {
    return `127.0.0.1:${this.port}`;
  }

  url(path: string): string {
    return `http://127.0.0.1:${this.port}${path}`;
  }

  hold(path: string): void {
    this.holding.add(path);
  }

  release(path: string): void {
    this.holding.delete(path);
    for (const w of this.held.get(path) ?? []) w();
    this.held.delete(path);
  }

  private async answer(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const path = req.url ?? '/';
    this.requests.set(path, (this.requests.get(path) ?? 0) + 1);
    res.on('close', () => {
      if (!res.writableFinished) this.cut.set(path, (this.cut.get(path) ?? 0) + 1);
    });
    const body = this.bodies.get(path);
    if (!body) {
      res.writeHead(404).end();
      return;
    }
    res.writeHead(200, { 'content-length': body.length, 'content-type': 'application/octet-stream' });
    if (this.holding.has(path)) {
      res.write(body.subarray(0, body.length - 1));
      await new Promise<void>((r) => this.held.set(path, [...(this.held.get(path) ?? []), r]));
      res.end(body.subarray(body.length - 1));
      return;
    }
    res.end(body);
  }

  async stop(): Promise<void> {
    for (const p of [...this.holding]) this.release(p);
    const s = this.server;
    if (!s) return;
    this.server = undefined;
    s.closeAllConnections();
    await new Promise<void>((r) => s.close(() => r()));
  }
}
