// gRPC server reflection (grpc.reflection.v1 and v1alpha) answered from the generated file
// descriptors, so grpcurl and similar tools can list and call our services without .proto files.
// Our own, because @grpc/reflection mishandles schemas spread over several files.
import { type DescFile, type DescService, toBinary } from '@bufbuild/protobuf';
import { nestedTypes } from '@bufbuild/protobuf/reflect';
import { FileDescriptorProtoSchema } from '@bufbuild/protobuf/wkt';
import { status } from '@grpc/grpc-js';
import { ServerReflection as ServerReflectionV1 } from '../gen/grpc/reflection/v1/reflection_pb.ts';
import { ServerReflection as ServerReflectionV1alpha } from '../gen/grpc/reflection/v1alpha/reflection_pb.ts';
import { implement, type ServiceRegistration } from './service.ts';

/** A reflection query, in the shape v1 and v1alpha requests share. */
export type Query =
  | {
      case: 'fileByFilename' | 'fileContainingSymbol' | 'allExtensionNumbersOfType' | 'listServices';
      value: string;
    }
  | { case: 'fileContainingExtension'; value: { containingType: string; extensionNumber: number } }
  | { case: undefined; value?: undefined };

/** A reflection answer, in the shape v1 and v1alpha responses share. */
export type Answer =
  | { case: 'fileDescriptorResponse'; value: { fileDescriptorProto: Uint8Array[] } }
  | { case: 'listServicesResponse'; value: { service: { name: string }[] } }
  | { case: 'allExtensionNumbersResponse'; value: { baseTypeName: string; extensionNumber: number[] } }
  | { case: 'errorResponse'; value: { errorCode: number; errorMessage: string } };

/** Files and symbols reachable from a set of services, with their descriptors serialized once. */
export class ReflectionIndex {
  readonly #services: string[];
  readonly #files = new Map<string, DescFile>();
  readonly #symbols = new Map<string, DescFile>();
  readonly #encoded = new Map<DescFile, Uint8Array>();

  constructor(services: readonly DescService[]) {
    this.#services = [...new Set(services.map((s) => s.typeName))].sort();
    for (const s of services) this.#addFile(s.file);
  }

  #addFile(file: DescFile): void {
    const name = file.proto.name;
    if (this.#files.has(name)) return;
    this.#files.set(name, file);
    for (const type of nestedTypes(file)) {
      this.#symbols.set(type.typeName, file);
      switch (type.kind) {
        case 'service':
          for (const m of type.methods) this.#symbols.set(`${type.typeName}.${m.name}`, file);
          break;
        case 'message':
          for (const f of type.fields) this.#symbols.set(`${type.typeName}.${f.name}`, file);
          for (const o of type.oneofs) this.#symbols.set(`${type.typeName}.${o.name}`, file);
          break;
        case 'enum': {
          // Enum values live in the scope enclosing the enum, as in protobuf's own naming.
          const scope = type.typeName.slice(0, Math.max(0, type.typeName.lastIndexOf('.')));
          for (const v of type.values) this.#symbols.set(scope ? `${scope}.${v.name}` : v.name, file);
          break;
        }
        case 'extension':
          break;
      }
    }
    for (const dep of file.dependencies) this.#addFile(dep);
  }

  listServices(): string[] {
    return [...this.#services];
  }

  /** The named file and everything it imports, transitively; the named file comes first. */
  fileByName(name: string): Uint8Array[] | undefined {
    const file = this.#files.get(name);
    return file && this.#closure(file);
  }

  /** The file declaring a fully-qualified symbol (leading dot allowed), with its imports. */
  fileContainingSymbol(symbol: string): Uint8Array[] | undefined {
    const file = this.#symbols.get(symbol.startsWith('.') ? symbol.slice(1) : symbol);
    return file && this.#closure(file);
  }

  #closure(root: DescFile): Uint8Array[] {
    const seen = new Set<DescFile>();
    const out: Uint8Array[] = [];
    const visit = (f: DescFile) => {
      if (seen.has(f)) return;
      seen.add(f);
      out.push(this.#encode(f));
      for (const dep of f.dependencies) visit(dep);
    };
    visit(root);
    return out;
  }

  #encode(file: DescFile): Uint8Array {
    let bytes = this.#encoded.get(file);
    if (!bytes) {
      bytes = toBinary(FileDescriptorProtoSchema, file.proto);
      this.#encoded.set(file, bytes);
    }
    return bytes;
  }

  answer(q: Query): Answer {
    const files = (found: Uint8Array[] | undefined, what: string): Answer =>
      found
        ? { case: 'fileDescriptorResponse', value: { fileDescriptorProto: found } }
        : error(status.NOT_FOUND, `${what} not found`);
    switch (q.case) {
      case 'listServices':
        return {
          case: 'listServicesResponse',
          value: { service: this.#services.map((name) => ({ name })) },
        };
      case 'fileByFilename':
        return files(this.fileByName(q.value), `file ${JSON.stringify(q.value)}`);
      case 'fileContainingSymbol':
        return files(this.fileContainingSymbol(q.value), `symbol ${JSON.stringify(q.value)}`);
      case 'fileContainingExtension':
        return error(
          status.NOT_FOUND,
          `extension ${q.value.extensionNumber} of ${q.value.containingType} not found`,
        );
      case 'allExtensionNumbersOfType':
        // We define no extensions, so every known message simply has none.
        return this.#symbols.has(q.value)
          ? { case: 'allExtensionNumbersResponse', value: { baseTypeName: q.value, extensionNumber: [] } }
          : error(status.NOT_FOUND, `type ${JSON.stringify(q.value)} not found`);
      case undefined:
        return error(status.INVALID_ARGUMENT, 'empty reflection request');
    }
  }
}

function error(code: status, message: string): Answer {
  return { case: 'errorResponse', value: { errorCode: code, errorMessage: message } };
}

/**
 * The reflection services (v1 and v1alpha; their messages are identical on the wire) describing
 * `services` plus themselves.
 */
export function reflectionServices(services: readonly DescService[]): ServiceRegistration[] {
  const index = new ReflectionIndex([...services, ServerReflectionV1, ServerReflectionV1alpha]);
  return [
    implement(ServerReflectionV1, {
      serverReflectionInfo: async function* (requests) {
        for await (const request of requests) {
          yield {
            validHost: request.host,
            originalRequest: request,
            messageResponse: index.answer(request.messageRequest),
          };
        }
      },
    }),
    implement(ServerReflectionV1alpha, {
      serverReflectionInfo: async function* (requests) {
        for await (const request of requests) {
          yield {
            validHost: request.host,
            originalRequest: request,
            messageResponse: index.answer(request.messageRequest),
          };
        }
      },
    }),
  ];
}
