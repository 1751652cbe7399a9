// containerd.types.Descriptor ↔ the domain's descriptor, written once for every service and client.
import type { MessageInitShape } from '@bufbuild/protobuf';
import type {
  DescriptorSchema,
  Descriptor as ProtoDescriptor,
} from '../gen/containerd/types/descriptor_pb.ts';

/** A descriptor as the domain holds it; the digest stays a string until the caller validates it. */
export interface DescriptorFields<D extends string = string> {
  mediaType: string;
  digest: D;
  size: number;
  annotations?: Record<string, string>;
}

export function descriptorToProto(d: DescriptorFields): MessageInitShape<typeof DescriptorSchema> {
  return { mediaType: d.mediaType, digest: d.digest, size: BigInt(d.size), annotations: d.annotations ?? {} };
}

/** The fields of a protobuf descriptor; `annotations` only when there are any. */
export function descriptorFromProto(d: ProtoDescriptor): DescriptorFields {
  const out: DescriptorFields = { mediaType: d.mediaType, digest: d.digest, size: Number(d.size) };
  if (Object.keys(d.annotations).length > 0) out.annotations = { ...d.annotations };
  return out;
}
