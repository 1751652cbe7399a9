// Version service: the daemon's version and, when known, the source revision it was built from.
import { Version } from '../gen/containerd/services/version/v1/version_pb.ts';
import { implement, type ServiceRegistration } from '../grpc/service.ts';

export interface VersionServiceDeps {
  version: string;
  /** Source revision (git commit), or '' when unknown. */
  revision: string;
}

export function versionService(deps: VersionServiceDeps): ServiceRegistration {
  const answer = { version: deps.version, revision: deps.revision };
  return implement(Version, { version: () => answer });
}
