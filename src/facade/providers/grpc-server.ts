// Serves any SpecProvider (typically Strata's own spec store) as registryfacade.SpecProvider over gRPC,
// so ws-manager-style callers and other facades can ask it.

import { SpecProvider as SpecProviderService } from '../../api/gen/registryfacade/provider_pb.ts';
import { implement, type ServiceRegistration } from '../../api/grpc/service.ts';
import { invalidArgument } from '../../errors.ts';
import { specToProto } from './proto.ts';
import type { SpecProvider } from './provider.ts';

export function specProviderService(provider: SpecProvider): ServiceRegistration {
  return implement(SpecProviderService, {
    async getImageSpec(req, ctx) {
      if (req.id === '') throw invalidArgument('id is required');
      return { spec: specToProto(await provider.getSpec(req.id, ctx.signal)) };
    },
  });
}
