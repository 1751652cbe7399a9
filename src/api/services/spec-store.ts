// Serves Strata's own spec store for writing as strata.specstore.v1.SpecStore, beside the
// registryfacade.SpecProvider that reads it: a platform puts a workspace's spec from another machine, and a
// facade watching the store composes and prefetches it as it would after `strata spec put`.
import { invalidArgument } from '../../errors.ts';
import type { SpecStore } from '../../facade/providers/spec-store.ts';
import { specFromProto } from '../convert/image-spec.ts';
import { SpecStore as SpecStoreService } from '../gen/strata/specstore/v1/specstore_pb.ts';
import { implement, type ServiceRegistration } from '../grpc/service.ts';

export function specStoreService(store: SpecStore): ServiceRegistration {
  return implement(SpecStoreService, {
    async putImageSpec(req) {
      if (req.id === '') throw invalidArgument('id is required');
      if (!req.spec) throw invalidArgument('spec is required');
      await store.put(req.id, specFromProto(req.spec));
      return {};
    },
    async deleteImageSpec(req) {
      if (req.id === '') throw invalidArgument('id is required');
      await store.remove(req.id);
      return {};
    },
    async listImageSpecs() {
      return { ids: await store.list() };
    },
  });
}
