// Images service: containerd.services.images.v1 over the image store. Translation only; the store owns
// validation, masks and messages. Deletes trigger garbage collection (awaited when `sync` is set).
// `imageEvents` turns the store's changes into containerd's image events: the store reports every write
// (this service's, the first image API's, the hosted registry's), so each is announced once, here.
import type { MessageInitShape } from '@bufbuild/protobuf';
import { invalidArgument } from '../../errors.ts';
import type { ImageChange, ImageInput, ImageRecord, ImageStore } from '../../metadata/images.ts';
import { descriptorFromProto, descriptorToProto } from '../convert/descriptor.ts';
import { requestTime, timestampFromNanos } from '../convert/timestamps.ts';
import {
  ImageCreateSchema,
  ImageDeleteSchema,
  ImageUpdateSchema,
} from '../gen/containerd/services/images/v1/events_pb.ts';
import {
  CreateImageResponseSchema,
  GetImageResponseSchema,
  type Image,
  type ImageSchema,
  Images,
  ListImagesResponseSchema,
  UpdateImageResponseSchema,
} from '../gen/containerd/services/images/v1/images_pb.ts';
import { namespaceOf } from '../grpc/namespace.ts';
import { EncodedMessage, implement, type ServiceRegistration } from '../grpc/service.ts';
import type { EventExchange } from './events.ts';
import { encodeImageResponse, encodeListImagesResponse } from './image-wire.ts';
import { leaseOf } from './leases.ts';

export interface ImagesServiceDeps {
  images: ImageStore;
  /** Runs a garbage collection that starts after the call and resolves when it is done. */
  collectGarbage(): Promise<unknown>;
}

/**
 * The image store's `onChange` that publishes containerd's /images/create, /images/update and
 * /images/delete. The store calls it as the write commits, before the write returns, so a delete is
 * announced before a sync collection runs, as containerd does.
 */
export function imageEvents(events: EventExchange): (change: ImageChange) => void {
  return ({ namespace, kind, name, labels }) => {
    switch (kind) {
      case 'create':
        events.publish(namespace, '/images/create', ImageCreateSchema, { name, labels });
        return;
      case 'update':
        events.publish(namespace, '/images/update', ImageUpdateSchema, { name, labels });
        return;
      case 'delete':
        events.publish(namespace, '/images/delete', ImageDeleteSchema, { name });
    }
  };
}

export function imageToProto(r: ImageRecord): MessageInitShape<typeof ImageSchema> {
  return {
    name: r.name,
    labels: r.labels,
    target: descriptorToProto(r.target),
    createdAt: timestampFromNanos(r.createdAtNs),
    updatedAt: timestampFromNanos(r.updatedAtNs),
  };
}

/**
 * The request's image as the store takes it. Timestamps are ignored (ctr sends Go's zero time); the
 * target ctr sends on label updates is empty and only matters when a mask or full replace uses it.
 */
function imageInput(img: Image | undefined): ImageInput {
  // containerd 1.6 reads a missing image as an empty one, whose name it requires first.
  if (!img) throw invalidArgument('Image.Name required');
  const t = img.target;
  return {
    name: img.name,
    labels: img.labels,
    target: t && { ...descriptorFromProto(t), annotations: t.annotations },
  };
}

function writeOptions(metadata: Parameters<typeof leaseOf>[0], epoch: Image['createdAt']) {
  const lease = leaseOf(metadata);
  const sourceDateEpoch = requestTime(epoch);
  return { ...(lease && { lease }), ...(sourceDateEpoch && { sourceDateEpoch }) };
}

export function imagesService(deps: ImagesServiceDeps): ServiceRegistration {
  const { images } = deps;
  return implement(Images, {
    // Answers are encoded straight from the records (image-wire.ts): the same bytes, less work.
    get(req, ctx) {
      const found = images.get(namespaceOf(ctx.metadata), req.name);
      return new EncodedMessage(GetImageResponseSchema, encodeImageResponse(found));
    },
    async list(req, ctx) {
      const found = await images.list(namespaceOf(ctx.metadata), req.filters);
      return new EncodedMessage(ListImagesResponseSchema, encodeListImagesResponse(found));
    },
    create(req, ctx) {
      const ns = namespaceOf(ctx.metadata);
      const created = images.create(
        ns,
        imageInput(req.image),
        writeOptions(ctx.metadata, req.sourceDateEpoch),
      );
      return new EncodedMessage(CreateImageResponseSchema, encodeImageResponse(created));
    },
    update(req, ctx) {
      const ns = namespaceOf(ctx.metadata);
      const updated = images.update(
        ns,
        imageInput(req.image),
        req.updateMask?.paths ?? [],
        writeOptions(ctx.metadata, req.sourceDateEpoch),
      );
      return new EncodedMessage(UpdateImageResponseSchema, encodeImageResponse(updated));
    },
    async delete(req, ctx) {
      const ns = namespaceOf(ctx.metadata);
      const lease = leaseOf(ctx.metadata);
      // proto3 `optional`: a present target with a digest makes the delete conditional.
      const target = req.target?.digest || undefined;
      images.delete(ns, req.name, { ...(lease && { lease }), ...(target && { target }) });
      if (req.sync) await deps.collectGarbage();
      return {};
    },
  });
}
