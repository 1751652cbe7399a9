// Guards the wire contracts against accidental edits: the method paths real clients call and the
// field numbers, names and types they encode. Values come from containerd 1.6 and Gitpod's APIs.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { type DescField, type DescMessage, type DescService, ScalarType } from '@bufbuild/protobuf';
import { BuildSourceDockerfileSchema, ImageBuilder } from '../gen/builder/imgbuilder_pb.ts';
import { Content, WriteContentRequestSchema } from '../gen/containerd/services/content/v1/content_pb.ts';
import { Diff } from '../gen/containerd/services/diff/v1/diff_pb.ts';
import { ImageSchema, Images } from '../gen/containerd/services/images/v1/images_pb.ts';
import { Introspection } from '../gen/containerd/services/introspection/v1/introspection_pb.ts';
import { Leases } from '../gen/containerd/services/leases/v1/leases_pb.ts';
import { Namespaces } from '../gen/containerd/services/namespaces/v1/namespace_pb.ts';
import {
  InfoSchema as SnapshotInfoSchema,
  Snapshots,
} from '../gen/containerd/services/snapshots/v1/snapshots_pb.ts';
import { Version } from '../gen/containerd/services/version/v1/version_pb.ts';
import { DescriptorSchema } from '../gen/containerd/types/descriptor_pb.ts';
import { MountSchema } from '../gen/containerd/types/mount_pb.ts';
import { GitInitializerSchema } from '../gen/contentservice/initializer_pb.ts';
import { ImageSpecSchema, RemoteContentLayerSchema } from '../gen/registryfacade/imagespec_pb.ts';
import { GetImageSpecRequestSchema, SpecProvider } from '../gen/registryfacade/provider_pb.ts';
import { methodPath } from '../transport/framing.ts';

function typeOf(f: DescField): string {
  switch (f.fieldKind) {
    case 'scalar':
      return ScalarType[f.scalar].toLowerCase();
    case 'enum':
      return f.enum.typeName;
    case 'message':
      return f.message.typeName;
    case 'list':
      return `repeated ${f.listKind === 'scalar' ? ScalarType[f.scalar].toLowerCase() : f.listKind === 'enum' ? f.enum.typeName : f.message.typeName}`;
    case 'map': {
      const v =
        f.mapKind === 'scalar'
          ? ScalarType[f.scalar].toLowerCase()
          : f.mapKind === 'enum'
            ? f.enum.typeName
            : f.message.typeName;
      return `map<${ScalarType[f.mapKey].toLowerCase()},${v}>`;
    }
  }
}

/** "number name type" per field, in number order. */
function shape(m: DescMessage): string[] {
  return [...m.fields].sort((a, b) => a.number - b.number).map((f) => `${f.number} ${f.name} ${typeOf(f)}`);
}

function methods(s: DescService): string[] {
  return s.methods.map((m) => `${methodPath(m)} ${m.methodKind}`);
}

test('containerd service paths and streaming kinds', () => {
  const p = (svc: string, m: string, kind = 'unary') => `/containerd.services.${svc}/${m} ${kind}`;
  assert.deepEqual(methods(Version), [p('version.v1.Version', 'Version')]);
  assert.deepEqual(methods(Introspection), [
    p('introspection.v1.Introspection', 'Plugins'),
    p('introspection.v1.Introspection', 'Server'),
    p('introspection.v1.Introspection', 'PluginInfo'),
  ]);
  assert.deepEqual(
    methods(Namespaces),
    ['Get', 'List', 'Create', 'Update', 'Delete'].map((m) => p('namespaces.v1.Namespaces', m)),
  );
  assert.deepEqual(
    methods(Images),
    ['Get', 'List', 'Create', 'Update', 'Delete'].map((m) => p('images.v1.Images', m)),
  );
  assert.deepEqual(methods(Content), [
    p('content.v1.Content', 'Info'),
    p('content.v1.Content', 'Update'),
    p('content.v1.Content', 'List', 'server_streaming'),
    p('content.v1.Content', 'Delete'),
    p('content.v1.Content', 'Read', 'server_streaming'),
    p('content.v1.Content', 'Status'),
    p('content.v1.Content', 'ListStatuses'),
    p('content.v1.Content', 'Write', 'bidi_streaming'),
    p('content.v1.Content', 'Abort'),
  ]);
  assert.deepEqual(
    methods(Leases),
    ['Create', 'Delete', 'List', 'AddResource', 'DeleteResource', 'ListResources'].map((m) =>
      p('leases.v1.Leases', m),
    ),
  );
  assert.deepEqual(
    methods(Snapshots),
    ['Prepare', 'View', 'Mounts', 'Commit', 'Remove', 'Stat', 'Update', 'List', 'Usage', 'Cleanup'].map((m) =>
      p('snapshots.v1.Snapshots', m, m === 'List' ? 'server_streaming' : 'unary'),
    ),
  );
  assert.deepEqual(methods(Diff), [p('diff.v1.Diff', 'Apply'), p('diff.v1.Diff', 'Diff')]);
});

test('containerd message shapes', () => {
  assert.deepEqual(shape(DescriptorSchema), [
    '1 media_type string',
    '2 digest string',
    '3 size int64',
    '5 annotations map<string,string>',
  ]);
  assert.deepEqual(shape(ImageSchema), [
    '1 name string',
    '2 labels map<string,string>',
    '3 target containerd.types.Descriptor',
    '7 created_at google.protobuf.Timestamp',
    '8 updated_at google.protobuf.Timestamp',
  ]);
  assert.deepEqual(shape(WriteContentRequestSchema), [
    '1 action containerd.services.content.v1.WriteAction',
    '2 ref string',
    '3 total int64',
    '4 expected string',
    '5 offset int64',
    '6 data bytes',
    '7 labels map<string,string>',
  ]);
  assert.deepEqual(shape(MountSchema), [
    '1 type string',
    '2 source string',
    '3 target string',
    '4 options repeated string',
  ]);
  assert.deepEqual(shape(SnapshotInfoSchema), [
    '1 name string',
    '2 parent string',
    '3 kind containerd.services.snapshots.v1.Kind',
    '4 created_at google.protobuf.Timestamp',
    '5 updated_at google.protobuf.Timestamp',
    '6 labels map<string,string>',
  ]);
});

test('Gitpod service paths and message shapes', () => {
  assert.deepEqual(methods(SpecProvider), ['/registryfacade.SpecProvider/GetImageSpec unary']);
  assert.deepEqual(methods(ImageBuilder), [
    '/builder.ImageBuilder/ResolveBaseImage unary',
    '/builder.ImageBuilder/ResolveWorkspaceImage unary',
    '/builder.ImageBuilder/Build server_streaming',
    '/builder.ImageBuilder/Logs server_streaming',
    '/builder.ImageBuilder/ListBuilds unary',
  ]);
  assert.deepEqual(shape(GetImageSpecRequestSchema), ['1 id string']);
  assert.deepEqual(shape(ImageSpecSchema), [
    '1 base_ref string',
    '2 ide_ref string',
    '3 content_layer repeated registryfacade.ContentLayer',
    '5 supervisor_ref string',
    '7 ide_layer_ref repeated string',
  ]);
  assert.deepEqual(shape(RemoteContentLayerSchema), [
    '1 url string',
    '2 digest string',
    '3 diff_id string',
    '4 media_type string',
    '5 size int64',
  ]);
  assert.deepEqual(shape(BuildSourceDockerfileSchema), [
    '1 source contentservice.WorkspaceInitializer',
    '2 dockerfile_version string',
    '3 dockerfile_path string',
    '4 context_path string',
  ]);
  assert.deepEqual(shape(GitInitializerSchema), [
    '1 remote_uri string',
    '2 upstream_Remote_uri string',
    '3 target_mode contentservice.CloneTargetMode',
    '4 clone_taget string',
    '5 checkout_location string',
    '6 config contentservice.GitConfig',
    '7 full_clone bool',
  ]);
});
