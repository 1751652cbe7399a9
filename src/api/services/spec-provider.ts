// Serves any SpecProvider (typically Strata's own spec store) as registryfacade.SpecProvider over gRPC,
// so ws-manager-style callers and other facades can ask it.

import { invalidArgument } from '../../errors.ts';
import type { SpecProvider } from '../../facade/providers/provider.ts';
import { specToProto } from '../convert/image-spec.ts';
import { SpecProvider as SpecProviderService } from '../gen/registryfacade/provider_pb.ts';
import { implement, type ServiceRegistration } from '../grpc/service.ts';

export function specProviderService(provider: SpecProvider): ServiceRegistration {
  return implement(SpecProviderService, {
    async getImageSpec(req, ctx) {
      if (req.id === '') throw invalidArgument('id is required');
      return { spec: specToProto(await provider.getSpec(req.id, ctx.signal)) };
    },
  });
}
