// `strata spec put|get|ls|rm|serve`: Strata's own spec store. Each works on a data dir or, with --address,
// over gRPC: get asks any registryfacade.SpecProvider, put/ls/rm a store served with writes
// (strata.specstore.v1.SpecStore). serve offers a data dir as SpecProvider, and with --writable as
// SpecStore too.
import { readFile } from 'node:fs/promises';
import { resolve } from 'node:path';
import type { Command } from 'commander';
import { specFromJson, specToJson } from '../api/convert/image-spec-json.ts';
import type { GrpcConnectionLimits } from '../api/grpc/server.ts';
import { invalidArgument, messageOf } from '../errors.ts';
import type { TlsFiles } from '../facade/http/tls-files.ts';
import type { SpecStore } from '../facade/providers/spec-store.ts';
import { type ContentLayer, type ImageSpec, validateImageSpec } from '../facade/spec.ts';
import {
  DEFAULT_SPEC_STORE,
  openSpecStore,
  remoteSpecProvider,
  type ServedSpecStore,
  serveSpecStore,
} from '../server/spec-provider.ts';
import { type ClientTlsFlags, clientTlsFrom, withClientTls } from './client-tls.ts';
import { hiddenAlias, parseLogLevel } from './flag-names.ts';
import { runUntilSignalled, StartupHup } from './until-signalled.ts';

const collect = (v: string, prev: string[]): string[] => [...prev, v];

interface StoreFlags extends ClientTlsFlags {
  specStore: string;
  address?: string;
}

interface PutFlags extends StoreFlags {
  baseRef?: string;
  ideRef?: string;
  supervisorRef?: string;
  ideLayerRef: string[];
  contentLayerUrl: string[];
  contentLayerDigest: string[];
  contentLayerDiffId: string[];
  contentLayerMediaType: string[];
  contentLayerSize: string[];
  directLayer: string[];
}

/**
 * A spec file's document. JSON (what tools write) is read as JSON; the YAML parser, ~70 modules and a
 * good part of a put's start-up, is loaded only for a file that is not JSON.
 */
async function parseSpecFile(text: string): Promise<unknown> {
  if (/^\s*[{[]/.test(text)) {
    try {
      return JSON.parse(text);
    } catch {
      // Flow-style YAML can start like JSON; the YAML parser decides.
    }
  }
  const { parse } = await import('yaml');
  return parse(text, { maxAliasCount: 100 });
}

/** The spec a `put` describes: a file (YAML/JSON, protobuf-JSON names), or flags, or both (flags win). */
export async function specFromPut(file: string | undefined, f: PutFlags): Promise<ImageSpec> {
  let spec: ImageSpec = { baseRef: '', ideRef: '', supervisorRef: '', ideLayerRefs: [], contentLayers: [] };
  if (file !== undefined) {
    let doc: unknown;
    try {
      doc = await parseSpecFile(await readFile(file, 'utf8'));
    } catch (err) {
      throw invalidArgument(`${file}: ${messageOf(err)}`);
    }
    spec = specFromJson(doc, file);
  }
  if (f.baseRef) spec.baseRef = f.baseRef;
  if (f.ideRef) spec.ideRef = f.ideRef;
  if (f.supervisorRef) spec.supervisorRef = f.supervisorRef;
  if (f.ideLayerRef.length > 0) spec.ideLayerRefs = f.ideLayerRef;
  const n = f.contentLayerUrl.length;
  for (const [flag, values] of [
    ['--content-layer-digest', f.contentLayerDigest],
    ['--content-layer-size', f.contentLayerSize],
  ] as const) {
    if (values.length !== n) throw invalidArgument(`give ${flag} once per --content-layer-url (${n})`);
  }
  const added: ContentLayer[] = f.contentLayerUrl.map((url, i) => ({
    kind: 'remote',
    url,
    digest: f.contentLayerDigest[i]!,
    diffId: f.contentLayerDiffId[i] ?? '',
    mediaType: f.contentLayerMediaType[i] ?? 'application/vnd.oci.image.layer.v1.tar+gzip',
    size: Number(f.contentLayerSize[i]),
  }));
  for (const path of f.directLayer)
    added.push({ kind: 'direct', content: new Uint8Array(await readFile(path)) });
  if (added.length > 0) spec.contentLayers = [...spec.contentLayers, ...added];
  return validateImageSpec(spec, { allowHttpHost: () => true });
}

interface ServeFlags {
  specStore: string;
  listen: string;
  logLevel: string;
  writable?: boolean;
  maxConnections?: string;
  idleSeconds?: string;
  keepaliveSeconds?: string;
  keepaliveTimeoutSeconds?: string;
  minPingIntervalSeconds?: string;
  tlsCert?: string;
  tlsKey?: string;
  tlsClientCa?: string;
}

/**
 * `strata spec serve`'s flags for its listener's connections, each a key of the `connections` section
 * the builder and `strata up`'s `specs` take (same defaults), read by that section's parser.
 */
const CONNECTION_FLAGS = {
  max: ['--max-connections', 'maxConnections'],
  idleSeconds: ['--idle-seconds', 'idleSeconds'],
  keepaliveSeconds: ['--keepalive-seconds', 'keepaliveSeconds'],
  keepaliveTimeoutSeconds: ['--keepalive-timeout-seconds', 'keepaliveTimeoutSeconds'],
  minPingIntervalSeconds: ['--min-ping-interval-seconds', 'minPingIntervalSeconds'],
} as const;

/** The connection limits `strata spec serve`'s flags set; InvalidArgument naming the flag for a bad value. */
export async function serveConnectionsFrom(f: ServeFlags): Promise<GrpcConnectionLimits> {
  const { grpcConnectionsFrom } = await import('../server/facade-config.ts');
  const section: Record<string, unknown> = {};
  for (const [key, [, attr]] of Object.entries(CONNECTION_FLAGS)) {
    const v = f[attr];
    if (v === undefined) continue;
    const n = Number(v);
    // A value that is no number is passed on as given, so the refusal quotes it.
    section[key] = v.trim() !== '' && Number.isFinite(n) ? n : v;
  }
  return grpcConnectionsFrom(section, 'connections', (where, what) => {
    const key = where.slice('connections.'.length) as keyof typeof CONNECTION_FLAGS;
    throw invalidArgument(`${CONNECTION_FLAGS[key][0]}: ${what}`);
  });
}

/** `strata spec serve`'s TLS flags, each a key of the `tls` section the facade's and `strata up`'s spec store take. */
const TLS_FLAGS = {
  cert: ['--tls-cert', 'tlsCert'],
  key: ['--tls-key', 'tlsKey'],
  clientCa: ['--tls-client-ca', 'tlsClientCa'],
} as const;

/**
 * The listener TLS files `strata spec serve`'s flags name (undefined: plain), read by the parser of the
 * config's `tls` section; InvalidArgument naming the flag for an incomplete set.
 */
export async function serveTlsFrom(f: ServeFlags): Promise<TlsFiles | undefined> {
  const given = Object.values(TLS_FLAGS).filter(([, attr]) => f[attr] !== undefined);
  if (given.length === 0) return undefined;
  const { listenerTlsFilesFrom } = await import('../server/facade-config.ts');
  const section: Record<string, unknown> = {};
  for (const [key, [, attr]] of Object.entries(TLS_FLAGS)) section[key] = f[attr];
  return listenerTlsFilesFrom(
    section,
    'tls',
    (v) => resolve(String(v)),
    (where, what) => {
      const flag = TLS_FLAGS[where.slice('tls.'.length) as keyof typeof TLS_FLAGS][0];
      throw invalidArgument(
        what === 'required'
          ? `${flag} is required with ${given.map(([name]) => name).join(' and ')}: TLS needs --tls-cert and --tls-key`
          : `${flag}: ${what}`,
      );
    },
  );
}

function print(value: unknown): void {
  process.stdout.write(`${JSON.stringify(value, null, 2)}\n`);
}

async function run(fn: () => Promise<void>): Promise<void> {
  try {
    await fn();
  } catch (err) {
    process.stderr.write(`strata spec: ${messageOf(err)}\n`);
    process.exitCode = 1;
  }
}

/** `--spec-store <dir>`, by default `strata up`'s, with `--data-dir` as its older hidden name. */
function withSpecStore(cmd: Command): Command {
  cmd.option(
    '--spec-store <dir>',
    'spec store directory (env STRATA_SPEC_STORE)',
    process.env.STRATA_SPEC_STORE || DEFAULT_SPEC_STORE,
  );
  return hiddenAlias(cmd, '--data-dir <dir>', 'specStore');
}

/** `--address` (and TLS to it): a spec store served over gRPC with writes, instead of the directory. */
function withRemoteStore(cmd: Command): Command {
  return withClientTls(
    cmd.option(
      '--address <host:port>',
      'work on the spec store served there (strata spec serve --writable, or specProviders.store.writable)',
    ),
  );
}

/** Runs `use` on the store the flags name: the directory, or the one served at --address. */
async function withStore<T>(
  f: StoreFlags,
  use: (store: Pick<SpecStore, 'put' | 'remove' | 'list'>) => Promise<T>,
): Promise<T> {
  if (!f.address) return use(openSpecStore(resolve(f.specStore)));
  const { GrpcSpecStore } = await import('../api/clients/spec-store.ts');
  const remote = new GrpcSpecStore(f.address, { tls: await clientTlsFrom(f) });
  try {
    return await use(remote);
  } finally {
    remote.close();
  }
}

export function registerSpec(program: Command): void {
  const spec = program.command('spec').description("manage Strata's own image spec store");
  withRemoteStore(
    withSpecStore(
      spec
        .command('put <id> [file]')
        .description('store the spec for ID, from FILE (YAML/JSON, protobuf-JSON field names) and/or flags'),
    ),
  )
    .option('--base-ref <ref>', 'base image')
    .option('--ide-ref <ref>', 'IDE image whose layers are added')
    .option('--supervisor-ref <ref>', 'supervisor image whose layers are added')
    .option('--ide-layer-ref <ref>', 'further image whose layers are added (repeatable)', collect, [])
    .option('--content-layer-url <url>', 'remote content layer URL (repeatable)', collect, [])
    .option('--content-layer-digest <digest>', 'digest of the blob at the matching URL', collect, [])
    .option(
      '--content-layer-diff-id <digest>',
      'diff_id of the matching URL (empty: uncompressed)',
      collect,
      [],
    )
    .option(
      '--content-layer-media-type <type>',
      'media type of the matching URL (default tar+gzip)',
      collect,
      [],
    )
    .option('--content-layer-size <bytes>', 'size of the blob at the matching URL', collect, [])
    .option(
      '--direct-layer <tar>',
      'an uncompressed tar file added as a direct content layer (repeatable)',
      collect,
      [],
    )
    .action((id: string, file: string | undefined, f: PutFlags) =>
      run(async () => {
        const s = await specFromPut(file, f);
        await withStore(f, (store) => store.put(id, s));
      }),
    );
  withClientTls(
    withSpecStore(spec.command('get <id>').description('print the spec for ID as protobuf-JSON')).option(
      '--address <host:port>',
      'ask this registryfacade.SpecProvider instead of the store',
    ),
  ).action((id: string, f: StoreFlags) =>
    run(async () => {
      if (f.address) {
        const p = await remoteSpecProvider(f.address, await clientTlsFrom(f));
        try {
          print(specToJson(await p.getSpec(id)));
        } finally {
          p.close();
        }
        return;
      }
      print(specToJson(await openSpecStore(resolve(f.specStore)).getSpec(id)));
    }),
  );
  withRemoteStore(withSpecStore(spec.command('ls').description('list the stored spec ids'))).action(
    (f: StoreFlags) =>
      run(async () => {
        for (const id of await withStore(f, (store) => store.list())) process.stdout.write(`${id}\n`);
      }),
  );
  withRemoteStore(withSpecStore(spec.command('rm <id>').description('remove the spec for ID'))).action(
    (id: string, f: StoreFlags) => run(() => withStore(f, (store) => store.remove(id))),
  );
  withSpecStore(
    spec.command('serve').description('serve the spec store as registryfacade.SpecProvider over gRPC'),
  )
    .option('--listen <host:port>', 'address to serve on', '127.0.0.1:5051')
    .option(
      '--writable',
      'also take puts and removals (strata.specstore.v1.SpecStore): anyone reaching --listen can then add specs',
    )
    .option('--log-level <level>', 'fatal, error, warn, info, debug, trace or silent', parseLogLevel, 'info')
    .option(
      '--max-connections <n>',
      'open connections in all; at the cap the oldest with no call in flight is closed (default: half the open-file limit, less a reserve; at most 16384)',
    )
    .option(
      '--idle-seconds <seconds>',
      'close a connection with no call in flight this long with a GOAWAY (default 300)',
    )
    .option(
      '--keepalive-seconds <seconds>',
      'send an HTTP/2 PING this long after connecting and after each answered one (default 60)',
    )
    .option(
      '--keepalive-timeout-seconds <seconds>',
      'close a connection whose PING is not answered within this, cancelling its calls (default 20)',
    )
    .option(
      '--min-ping-interval-seconds <seconds>',
      "least time between a client's PINGs; a third too soon in a row closes the connection (default 10)",
    )
    .option(
      '--tls-cert <file>',
      'serve gRPC over TLS with this PEM certificate (reloaded on change and SIGHUP)',
    )
    .option('--tls-key <file>', "the certificate's PEM private key")
    .option(
      '--tls-client-ca <file>',
      'PEM CA: only clients showing a certificate it signed are served (mutual TLS; needs --tls-cert)',
    )
    .action((f: ServeFlags) =>
      run(async () => {
        // Only `serve` needs the listen-address parser (with the facade's whole config module) and a
        // logger: put/get/ls/rm start without them.
        const [{ parseListen }, { pino }] = await Promise.all([
          import('../server/facade-config.ts'),
          import('pino'),
        ]);
        const connections = await serveConnectionsFrom(f);
        const tls = await serveTlsFrom(f);
        const logger = pino({ level: f.logLevel, base: { pid: process.pid, service: 'spec-provider' } });
        // With TLS files to reload, a SIGHUP re-reads them (one while starting, once it listens) instead
        // of ending the process.
        const startup = tls && new StartupHup();
        let server: ServedSpecStore;
        try {
          server = await serveSpecStore(resolve(f.specStore), parseListen(f.listen, '--listen'), logger, {
            writable: f.writable === true,
            connections,
            ...(tls && { tls }),
          });
        } catch (err) {
          startup?.take();
          throw err;
        }
        await runUntilSignalled(
          logger,
          'spec provider',
          () => server.shutdown(),
          tls && (() => server.reload()),
          startup,
        );
      }),
    );
}
