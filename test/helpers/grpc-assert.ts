// Assertions shared by the gRPC integration tests.
import assert from 'node:assert/strict';
import { access } from 'node:fs/promises';
import { create, createFileRegistry, type FileRegistry, type MessageInitShape } from '@bufbuild/protobuf';
import { type FileDescriptorProto, FileDescriptorSetSchema } from '@bufbuild/protobuf/wkt';
import * as grpc from '@grpc/grpc-js';
import {
  ServerReflection,
  type ServerReflectionRequestSchema,
} from '../../src/api/gen/grpc/reflection/v1/reflection_pb.ts';
import { callBidi } from '../../src/api/grpc/client.ts';

/** The code and message a call failed with; fails the test if it succeeded. */
export async function failure(p: Promise<unknown>): Promise<{ code: number; details: string }> {
  try {
    await p;
  } catch (err) {
    const e = err as grpc.ServiceError;
    return { code: e.code, details: e.details };
  }
  assert.fail('call succeeded but should have failed');
}

/** The call must fail with `code`, and with `details` when given (exact string or pattern). */
export async function expectCode(
  p: Promise<unknown>,
  code: grpc.status,
  details?: RegExp | string,
): Promise<void> {
  const f = await failure(p);
  assert.equal(grpc.status[f.code], grpc.status[code], `code (details: ${f.details})`);
  if (typeof details === 'string') assert.equal(f.details, details);
  else if (details) assert.match(f.details, details);
}

export const exists = (p: string): Promise<boolean> =>
  access(p).then(
    () => true,
    () => false,
  );

/** A registry from reflected files; fails if any import is missing from the answer. */
export function registryOf(files: FileDescriptorProto[]): FileRegistry {
  const ordered: FileDescriptorProto[] = [];
  const seen = new Set<string>();
  const visit = (f: FileDescriptorProto) => {
    if (seen.has(f.name)) return;
    seen.add(f.name);
    for (const name of f.dependency) {
      const dep = files.find((x) => x.name === name);
      assert.ok(dep, `${name}, imported by ${f.name}, is missing`);
      visit(dep);
    }
    ordered.push(f);
  };
  files.forEach(visit);
  return createFileRegistry(create(FileDescriptorSetSchema, { file: ordered }));
}

/** One grpc.reflection.v1 stream: `ask` sends a request and returns its answer; `end` closes the stream. */
export function reflectionSession(client: grpc.Client) {
  const call = callBidi(client, ServerReflection.method.serverReflectionInfo);
  const responses = call.responses[Symbol.asyncIterator]();
  return {
    async ask(messageRequest: MessageInitShape<typeof ServerReflectionRequestSchema>['messageRequest']) {
      await call.send({ messageRequest });
      const r = await responses.next();
      assert.ok(!r.done);
      return r.value.messageResponse;
    },
    async end(): Promise<void> {
      call.end();
      assert.ok((await responses.next()).done);
    },
  };
}
