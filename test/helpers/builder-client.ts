// A builder.ImageBuilder client from another gRPC implementation: Python code generated at test time from
// seed 001's proto (test/fixtures/seed-001) by Debian's grpc_tools, run with the system Python.
import { copyFile, mkdir } from 'node:fs/promises';
import { join } from 'node:path';
import { runCommand } from './process.ts';
import { removeTempDir, tempDir } from './tmp.ts';

const FIXTURES = new URL('../fixtures/seed-001/', import.meta.url).pathname;
const INITIALIZER = new URL('../../proto/contentservice/initializer.proto', import.meta.url).pathname;
const PYTHON = '/usr/bin/python3';

export interface SeedCallResult {
  // biome-ignore lint/suspicious/noExplicitAny: JSON from the Python client, checked field by field by tests
  responses: any[];
  /** The gRPC code name (OK, NOT_FOUND, …) or CANCELLED_BY_CLIENT. */
  code: string;
  details?: string;
}

export interface SeedBuilderClient {
  call(
    address: string,
    method: string,
    request: object,
    opts?: { cancelAfter?: number },
  ): Promise<SeedCallResult>;
  cleanup(): Promise<void>;
}

export async function seedBuilderClient(): Promise<SeedBuilderClient> {
  const dir = await tempDir('seed-client');
  const src = join(dir, 'src');
  const out = join(dir, 'out');
  await mkdir(join(src, 'content-service-api'), { recursive: true });
  await mkdir(out);
  await copyFile(join(FIXTURES, 'imgbuilder.proto'), join(src, 'imgbuilder.proto'));
  await copyFile(INITIALIZER, join(src, 'content-service-api', 'initializer.proto'));
  await runCommand(PYTHON, [
    '-m',
    'grpc_tools.protoc',
    '-I',
    src,
    `--python_out=${out}`,
    `--grpc_python_out=${out}`,
    join(src, 'imgbuilder.proto'),
    join(src, 'content-service-api', 'initializer.proto'),
  ]);
  return {
    async call(address, method, request, opts = {}) {
      const args = [join(FIXTURES, 'client.py'), out, address, method, JSON.stringify(request)];
      if (opts.cancelAfter !== undefined) args.push('--cancel-after', String(opts.cancelAfter));
      const text = await runCommand(PYTHON, args, { timeoutMs: 600_000 });
      const lines = text
        .split('\n')
        .filter((l) => l.trim() !== '')
        .map((l) => JSON.parse(l) as { code?: string; details?: string });
      const last = lines.pop() ?? {};
      return {
        responses: lines,
        code: last.code ?? 'MISSING',
        ...(last.details !== undefined && { details: last.details }),
      };
    },
    cleanup: () => removeTempDir(dir),
  };
}
