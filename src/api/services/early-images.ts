// containerd.v1.Images, the first image API (seed 002), over the same image store as
// containerd.services.images.v1: what one API writes the other reads. Translation only; the store owns
// validation and messages. This API has no labels, timestamps or filters on the wire.
import type { MessageInitShape } from '@bufbuild/protobuf';
import { invalidArgument } from '../../errors.ts';
import type { ImageRecord, ImageStore } from '../../metadata/images.ts';
import { type ImageSchema, Images } from '../gen/containerd/v1/images_pb.ts';
import { namespaceOf } from '../grpc/namespace.ts';
import { implement, type RequestMetadata, type ServiceRegistration } from '../grpc/service.ts';
import { leaseOf } from './leases.ts';

function imageToProto(r: ImageRecord): MessageInitShape<typeof ImageSchema> {
  const { mediaType, digest, size } = r.target;
  return { name: r.name, target: { mediaType, digest, size: BigInt(size) } };
}

/** The request's `containerd-lease`, which an expiring image joins and a deleted one leaves. */
function leaseOption(metadata: RequestMetadata): { lease?: string } {
  const lease = leaseOf(metadata);
  return lease ? { lease } : {};
}

export function earlyImagesService(deps: { images: ImageStore }): ServiceRegistration {
  const { images } = deps;
  return implement(Images, {
    get(req, ctx) {
      return { image: imageToProto(images.get(namespaceOf(ctx.metadata), req.name)) };
    },
    put(req, ctx) {
      const ns = namespaceOf(ctx.metadata);
      if (!req.image) throw invalidArgument('Image required: invalid argument');
      const t = req.image.target;
      images.put(
        ns,
        {
          name: req.image.name,
          ...(t && { target: { mediaType: t.mediaType, digest: t.digest, size: Number(t.size) } }),
        },
        leaseOption(ctx.metadata),
      );
      return {};
    },
    async list(_req, ctx) {
      return { images: (await images.list(namespaceOf(ctx.metadata), [])).map(imageToProto) };
    },
    delete(req, ctx) {
      // The store marks the metadata dirty, so the next scheduled collection frees what only this held.
      images.delete(namespaceOf(ctx.metadata), req.name, leaseOption(ctx.metadata));
      return {};
    },
  });
}
