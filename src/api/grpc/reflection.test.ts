import assert from 'node:assert/strict';
import { test } from 'node:test';
import { fromBinary } from '@bufbuild/protobuf';
import { FileDescriptorProtoSchema } from '@bufbuild/protobuf/wkt';
import { status } from '@grpc/grpc-js';
import { ImageBuilder } from '../gen/builder/imgbuilder_pb.ts';
import { Content } from '../gen/containerd/services/content/v1/content_pb.ts';
import { SpecProvider } from '../gen/registryfacade/provider_pb.ts';
import { ReflectionIndex } from './reflection.ts';

const index = new ReflectionIndex([ImageBuilder, Content, SpecProvider, Content]);
const names = (bytes: Uint8Array[] | undefined) =>
  bytes?.map((b) => fromBinary(FileDescriptorProtoSchema, b).name);

test('lists each service once, sorted', () => {
  assert.deepEqual(index.listServices(), [
    'builder.ImageBuilder',
    'containerd.services.content.v1.Content',
    'registryfacade.SpecProvider',
  ]);
});

test('finds the file of services, methods, messages, nested messages, fields, enums and enum values', () => {
  const cases: [string, string][] = [
    ['builder.ImageBuilder', 'builder/imgbuilder.proto'],
    ['builder.ImageBuilder.Build', 'builder/imgbuilder.proto'],
    ['.builder.BuildRequest', 'builder/imgbuilder.proto'],
    ['builder.BuildStatus', 'builder/imgbuilder.proto'],
    ['builder.done_success', 'builder/imgbuilder.proto'],
    ['contentservice.FileDownloadInitializer.FileInfo', 'contentservice/initializer.proto'],
    ['contentservice.GitInitializer.upstream_Remote_uri', 'contentservice/initializer.proto'],
    ['contentservice.WorkspaceInitializer.spec', 'contentservice/initializer.proto'],
    ['containerd.services.content.v1.STAT', 'containerd/services/content/v1/content.proto'],
    ['registryfacade.ImageSpec', 'registryfacade/imagespec.proto'],
    ['google.protobuf.Timestamp', 'google/protobuf/timestamp.proto'],
  ];
  for (const [symbol, file] of cases) {
    assert.equal(names(index.fileContainingSymbol(symbol))?.[0], file, symbol);
  }
  for (const missing of ['builder', 'builder.Nope', 'builder.ImageBuilder.Nope', '', '.']) {
    assert.equal(index.fileContainingSymbol(missing), undefined, missing);
  }
});

test('a file comes with its imports, transitively, each once, the file itself first', () => {
  assert.deepEqual(names(index.fileByName('builder/imgbuilder.proto')), [
    'builder/imgbuilder.proto',
    'contentservice/initializer.proto',
  ]);
  assert.deepEqual(names(index.fileByName('registryfacade/provider.proto')), [
    'registryfacade/provider.proto',
    'registryfacade/imagespec.proto',
  ]);
  const content = names(index.fileByName('containerd/services/content/v1/content.proto')) ?? [];
  assert.equal(content[0], 'containerd/services/content/v1/content.proto');
  assert.deepEqual(content.slice(1).sort(), [
    'google/protobuf/empty.proto',
    'google/protobuf/field_mask.proto',
    'google/protobuf/timestamp.proto',
  ]);
  assert.equal(index.fileByName('builder/imgbuilder'), undefined);
  assert.equal(index.fileByName('containerd/services/images/v1/images.proto'), undefined);
});

test('answers every query kind, with error responses for what it does not know', () => {
  assert.equal(index.answer({ case: 'listServices', value: '*' }).case, 'listServicesResponse');
  assert.deepEqual(index.answer({ case: 'allExtensionNumbersOfType', value: 'builder.BuildRequest' }), {
    case: 'allExtensionNumbersResponse',
    value: { baseTypeName: 'builder.BuildRequest', extensionNumber: [] },
  });
  for (const q of [
    { case: 'allExtensionNumbersOfType', value: 'no.Such' } as const,
    {
      case: 'fileContainingExtension',
      value: { containingType: 'builder.BuildRequest', extensionNumber: 100 },
    } as const,
    { case: 'fileByFilename', value: 'nope.proto' } as const,
  ]) {
    const a = index.answer(q);
    assert.equal(a.case, 'errorResponse');
    assert.equal(a.value.errorCode, status.NOT_FOUND);
  }
  const empty = index.answer({ case: undefined });
  assert.equal(empty.case, 'errorResponse');
  assert.equal(empty.value.errorCode, status.INVALID_ARGUMENT);
});
