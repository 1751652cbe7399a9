// builder.ImageBuilder (seed 001) over the Builder: protobuf in, domain calls, protobuf out. The wire
// keeps Gitpod's shapes: a queued build's BuildInfo says `unknown` (not started) while the stream's
// status says running; the stream ends OK for both outcomes.

import type { MessageInitShape } from '@bufbuild/protobuf';
import type { CloneTargetMode as DomainMode } from '../../builder/git-source.ts';
import type { Builder, BuildInfo, BuildSourceSpec, BuildUpdate } from '../../builder/orchestrator.ts';
import { NO_AUTH, type RegistryAuthRequest } from '../../builder/registry-auth.ts';
import { invalidArgument, unimplemented } from '../../errors.ts';
import type { BuildInfoSchema } from '../gen/builder/imgbuilder_pb.ts';
import {
  type BuildInfo as BuildInfoMessage,
  type BuildRegistryAuth,
  type BuildSource,
  BuildStatus,
  ImageBuilder,
} from '../gen/builder/imgbuilder_pb.ts';
import { CloneTargetMode, GitAuthMethod } from '../gen/contentservice/initializer_pb.ts';
import { implement, type ServiceRegistration } from '../grpc/service.ts';

export interface BuilderServiceOptions {
  builder: Builder;
  /**
   * Where a client reads a build's log (this service's address), for BuildInfo.log_info; asked when a
   * build is described, since the port is known only once the server listens.
   */
  logUrl?: () => string;
}

const MODES: Record<number, DomainMode> = {
  [CloneTargetMode.REMOTE_HEAD]: 'remoteHead',
  [CloneTargetMode.REMOTE_COMMIT]: 'remoteCommit',
  [CloneTargetMode.REMOTE_BRANCH]: 'remoteBranch',
  [CloneTargetMode.LOCAL_BRANCH]: 'localBranch',
};

function authFromProto(auth: BuildRegistryAuth | undefined): RegistryAuthRequest {
  if (!auth) return NO_AUTH;
  const additional = { ...auth.additional };
  switch (auth.mode.case) {
    case 'total':
      return { mode: { kind: 'total', allowAll: auth.mode.value.allowAll }, additional };
    case 'selective': {
      const s = auth.mode.value;
      return {
        mode: {
          kind: 'selective',
          allowBaseRepository: s.allowBaserep,
          allowWorkspaceRepository: s.allowWorkspacerep,
          anyOf: [...s.anyOf],
        },
        additional,
      };
    }
    default:
      return { mode: { kind: 'none' }, additional };
  }
}

function sourceFromProto(source: BuildSource | undefined): BuildSourceSpec {
  if (!source || source.from.case === undefined) throw invalidArgument('build source is missing');
  if (source.from.case === 'ref') return { kind: 'ref', ref: source.from.value.ref };
  const file = source.from.value;
  const init = file.source?.spec;
  if (init?.case !== 'git')
    throw invalidArgument('unsupported context initializer: a Dockerfile source needs a git initializer');
  const g = init.value;
  const mode = MODES[g.targetMode];
  if (!mode) throw invalidArgument(`unknown clone target mode ${g.targetMode}`);
  const config = g.config;
  let auth: { username: string; password: string } | undefined;
  if (config?.authentication === GitAuthMethod.BASIC_AUTH) {
    auth = { username: config.authUser, password: config.authPassword };
  } else if (config?.authentication === GitAuthMethod.BASIC_AUTH_OTS) {
    throw unimplemented('git authentication BASIC_AUTH_OTS is not supported');
  }
  return {
    kind: 'dockerfile',
    git: {
      remoteUri: g.remoteUri,
      targetMode: mode,
      cloneTarget: g.cloneTaget,
      checkoutLocation: g.checkoutLocation,
      fullClone: g.fullClone,
      ...(auth && { auth }),
    },
    dockerfilePath: file.dockerfilePath,
    contextPath: file.contextPath,
    version: file.dockerfileVersion,
    buildArgs: {},
  };
}

const STATUS = {
  queued: BuildStatus.unknown,
  running: BuildStatus.running,
  succeeded: BuildStatus.done_success,
  failed: BuildStatus.done_failure,
} as const;

export function builderService(options: BuilderServiceOptions): ServiceRegistration {
  const { builder } = options;
  const info = (i: BuildInfo): MessageInitShape<typeof BuildInfoSchema> => ({
    buildId: i.id,
    ref: i.ref,
    baseRef: i.baseRef,
    status: STATUS[i.phase],
    startedAt: i.phase === 'queued' ? 0n : BigInt(Math.floor(i.startedAt / 1000)),
    logInfo: {
      url: options.logUrl?.() ?? '',
      headers: { 'x-strata-build-id': i.id },
    },
  });
  const response = (u: BuildUpdate) => ({
    ref: u.ref,
    baseRef: u.baseRef,
    status:
      u.status === 'running'
        ? BuildStatus.running
        : u.status === 'succeeded'
          ? BuildStatus.done_success
          : BuildStatus.done_failure,
    message: u.message,
    ...(u.info && { info: info(u.info) as BuildInfoMessage }),
  });
  return implement(ImageBuilder, {
    async resolveBaseImage(req, ctx) {
      return {
        ref: await builder.resolveBaseImage(req.ref, authFromProto(req.auth), req.useRetryClient, ctx.signal),
      };
    },
    async resolveWorkspaceImage(req, ctx) {
      const r = await builder.resolveWorkspaceImage(
        sourceFromProto(req.source),
        authFromProto(req.auth),
        req.useRetryClient,
        ctx.signal,
      );
      return {
        ref: r.ref,
        baseRef: r.baseRef,
        status: r.exists ? BuildStatus.done_success : BuildStatus.unknown,
      };
    },
    async *build(req, ctx) {
      const updates = builder.build(
        {
          source: sourceFromProto(req.source),
          auth: authFromProto(req.auth),
          forceRebuild: req.forceRebuild,
          triggeredBy: req.triggeredBy,
          baseImageNameResolved: req.baseImageNameResolved,
          useRetryClient: req.useRetryClient,
        },
        ctx.signal,
      );
      for await (const u of updates) yield response(u);
    },
    async *logs(req, ctx) {
      for await (const content of builder.logs(
        { buildRef: req.buildRef, buildId: req.buildId, censored: req.censored },
        ctx.signal,
      )) {
        yield { content };
      }
    },
    listBuilds() {
      return { builds: builder.listBuilds().map(info) };
    },
  });
}
