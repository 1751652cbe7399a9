// `strata build`: a client of a builder (`strata builder` or any builder.ImageBuilder). `build <source>`
// asks for a build of a git repository's Dockerfile or of an image reference, prints the status as it
// changes and the build's log as it is written, and exits 0 on success, 1 on a failed build, 2 when the
// builder could not be asked, 130 when interrupted (SIGINT or SIGTERM; the build itself goes on).
// `build logs` replays and follows a build's log; `build ls` lists builds.

import type { MessageInitShape } from '@bufbuild/protobuf';
import type { Client } from '@grpc/grpc-js';
import type { Command } from 'commander';
import { type BuildRequestSchema, BuildStatus, ImageBuilder } from '../api/gen/builder/imgbuilder_pb.ts';
import { CloneTargetMode } from '../api/gen/contentservice/initializer_pb.ts';
import { callServerStream, callUnary, createClient } from '../api/grpc/client.ts';
import { statusDetails } from '../api/grpc/status.ts';
import { buildOutput } from './build-progress.ts';
import { type ClientTlsFlags, clientTlsFrom, withClientTls } from './client-tls.ts';
import { interruptSignal } from './interrupt.ts';

interface BuildFlags extends ClientTlsFlags {
  address: string;
  dockerfile: string;
  context?: string;
  branch?: string;
  commit?: string;
  force?: boolean;
  logs: boolean;
}

// Set but empty counts as unset, as for STRATA_ADDRESS and STRATA_SPEC_STORE.
const DEFAULT_ADDRESS = process.env.STRATA_BUILDER || '127.0.0.1:8080';
const STATUS_NAME: Record<number, string> = {
  [BuildStatus.unknown]: 'queued',
  [BuildStatus.running]: 'running',
  [BuildStatus.done_success]: 'done',
  [BuildStatus.done_failure]: 'failed',
};

function failRpc(err: unknown): void {
  const said =
    typeof err === 'object' && err !== null
      ? statusDetails(err as { details?: string; message?: string })
      : String(err);
  process.stderr.write(`strata build: ${said}\n`);
  process.exitCode = 2;
}

/** A client of the builder the flags name; undefined (said why, exit code 2) when their TLS files are bad. */
async function connect(flags: BuildFlags): Promise<Client | undefined> {
  try {
    return createClient(flags.address, {}, await clientTlsFrom(flags));
  } catch (err) {
    failRpc(err);
    return undefined;
  }
}

/** The request for a source: a git URL (Dockerfile build) or an image reference (copied as it is). */
export function buildRequest(source: string, flags: BuildFlags): MessageInitShape<typeof BuildRequestSchema> {
  const isGit = /^(https?|git|file):\/\//.test(source);
  const targetMode = flags.commit
    ? CloneTargetMode.REMOTE_COMMIT
    : flags.branch
      ? CloneTargetMode.REMOTE_BRANCH
      : CloneTargetMode.REMOTE_HEAD;
  return {
    source: {
      from: isGit
        ? {
            case: 'file',
            value: {
              source: {
                spec: {
                  case: 'git',
                  value: { remoteUri: source, targetMode, cloneTaget: flags.commit ?? flags.branch ?? '' },
                },
              },
              dockerfilePath: flags.dockerfile,
              contextPath: flags.context ?? '',
            },
          }
        : { case: 'ref', value: { ref: source } },
    },
    forceRebuild: flags.force === true,
    triggeredBy: 'strata build',
  };
}

export function registerBuild(program: Command): void {
  const build = withClientTls(program.command('build'))
    .description('build an image on a builder: from a git repository (its Dockerfile) or an image reference')
    .argument('[source]', 'git URL (http, https, git, file) or image reference')
    .option('--address <host:port>', 'builder address (env STRATA_BUILDER)', DEFAULT_ADDRESS)
    .option('--dockerfile <path>', 'Dockerfile path in the repository', 'Dockerfile')
    .option('--context <path>', "build context in the repository (default: the Dockerfile's directory)")
    .option('--branch <name>', 'build the head of this branch')
    .option('--commit <id>', 'build this commit')
    .option('--force', 'build even if the image exists')
    .option('--no-logs', 'print status only, not the build log')
    .action(async (source: string | undefined, flags: BuildFlags) => {
      if (!source) {
        build.help({ error: true });
        return;
      }
      const client = await connect(flags);
      if (!client) return;
      let following: Promise<void> | undefined;
      const stop = new AbortController();
      let final: { ok: boolean; message: string; ref: string } | undefined;
      let buildId: string | undefined;
      const output = buildOutput(process.stdout, process.stderr);
      // Ctrl-C ends the call, not the build (the builder goes on without its caller); the bar is taken
      // down first, so the terminal gets its cursor back.
      const interrupt = interruptSignal();
      interrupt.signal.addEventListener('abort', () => stop.abort());
      try {
        for await (const res of callServerStream(
          client,
          ImageBuilder.method.build,
          buildRequest(source, flags),
          {
            signal: stop.signal,
          },
        )) {
          const status = STATUS_NAME[res.info?.status ?? res.status] ?? 'unknown';
          if (res.status === BuildStatus.running) {
            output.status(status, `[${status}] ${res.ref}${res.message ? `: ${res.message}` : ''}`);
            const id = res.info?.buildId;
            if (id) buildId = id;
            if (flags.logs && id && !following) {
              following = (async () => {
                for await (const chunk of callServerStream(
                  client,
                  ImageBuilder.method.logs,
                  { buildId: id },
                  {
                    signal: stop.signal,
                  },
                )) {
                  output.log(chunk.content);
                }
              })().catch(() => {});
            }
          } else {
            final = { ok: res.status === BuildStatus.done_success, message: res.message, ref: res.ref };
          }
        }
        await following;
        output.finish();
      } catch (err) {
        stop.abort();
        output.finish();
        if (interrupt.signal.aborted) {
          const follow = buildId ? ` (strata build logs ${buildId})` : '';
          process.stderr.write(`strata build: interrupted; the build goes on on the builder${follow}\n`);
          process.exitCode = 130;
        } else failRpc(err);
        client.close();
        return;
      } finally {
        interrupt.dispose();
      }
      client.close();
      if (!final) {
        process.stderr.write('strata build: the stream ended before the build did\n');
        process.exitCode = 2;
      } else if (final.ok) {
        process.stderr.write(`[done] ${final.ref}\n`);
        process.stdout.write(`${final.ref}\n`);
      } else {
        process.stderr.write(`[failed] ${final.message}\n`);
        process.exitCode = 1;
      }
    });

  build
    .command('logs')
    .description("print a build's log from the start and follow it until the build ends")
    .argument('<build>', 'build id or workspace image reference')
    .option('--censored', 'remove configured secrets and image names')
    .action(async (which: string, flags: { censored?: boolean }) => {
      const client = await connect(build.opts<BuildFlags>());
      if (!client) return;
      const byId = /^[0-9a-f-]{36}$/.test(which);
      try {
        for await (const chunk of callServerStream(client, ImageBuilder.method.logs, {
          ...(byId ? { buildId: which } : { buildRef: which }),
          censored: flags.censored === true,
        })) {
          process.stdout.write(chunk.content);
        }
      } catch (err) {
        failRpc(err);
      } finally {
        client.close();
      }
    });

  build
    .command('ls')
    .description('list queued, running and recently finished builds')
    .action(async () => {
      const client = await connect(build.opts<BuildFlags>());
      if (!client) return;
      try {
        const res = await callUnary(client, ImageBuilder.method.listBuilds, {});
        process.stdout.write('BUILD ID                              STATUS   STARTED               REF\n');
        for (const b of res.builds) {
          const started =
            b.startedAt > 0n ? new Date(Number(b.startedAt) * 1000).toISOString().slice(0, 19) : '-';
          process.stdout.write(
            `${b.buildId.padEnd(38)}${(STATUS_NAME[b.status] ?? 'unknown').padEnd(9)}${started.padEnd(22)}${b.ref}\n`,
          );
        }
      } catch (err) {
        failRpc(err);
      } finally {
        client.close();
      }
    });
}
