// registryfacade.ImageSpec (protobuf) ↔ the domain ImageSpec, for the gRPC API. Its protobuf-JSON form
// (spec store, fixed-spec files, `strata spec`) is in image-spec-json.ts, without the protobuf runtime.
import { create } from '@bufbuild/protobuf';
import { invalidArgument } from '../../errors.ts';
import type { ContentLayer, ImageSpec } from '../../facade/spec.ts';
import { ImageSpecSchema, type ImageSpec as ProtoImageSpec } from '../gen/registryfacade/imagespec_pb.ts';

export function specFromProto(p: ProtoImageSpec): ImageSpec {
  return {
    baseRef: p.baseRef,
    ideRef: p.ideRef,
    supervisorRef: p.supervisorRef,
    ideLayerRefs: [...p.ideLayerRef],
    contentLayers: p.contentLayer.map((l, i): ContentLayer => {
      const s = l.spec;
      if (s.case === 'direct') return { kind: 'direct', content: s.value.content };
      if (s.case === 'remote') {
        const size = s.value.size;
        if (size > BigInt(Number.MAX_SAFE_INTEGER) || size < 0n) {
          throw invalidArgument(`image spec: contentLayer[${i}]: size ${size} out of range`);
        }
        return {
          kind: 'remote',
          url: s.value.url,
          digest: s.value.digest,
          diffId: s.value.diffId,
          mediaType: s.value.mediaType,
          size: Number(size),
        };
      }
      throw invalidArgument(`image spec: contentLayer[${i}]: neither remote nor direct`);
    }),
  };
}

export function specToProto(spec: ImageSpec): ProtoImageSpec {
  return create(ImageSpecSchema, {
    baseRef: spec.baseRef,
    ideRef: spec.ideRef,
    supervisorRef: spec.supervisorRef,
    ideLayerRef: spec.ideLayerRefs,
    contentLayer: spec.contentLayers.map((l) =>
      l.kind === 'direct'
        ? { spec: { case: 'direct' as const, value: { content: l.content } } }
        : {
            spec: {
              case: 'remote' as const,
              value: {
                url: l.url,
                digest: l.digest,
                diffId: l.diffId,
                mediaType: l.mediaType,
                size: BigInt(l.size),
              },
            },
          },
    ),
  });
}
