// Strata's own spec store, alone or asked remotely: what `strata spec` works on, and the store served as
// registryfacade.SpecProvider over gRPC (`strata spec serve`).
import { join } from 'node:path';
import type { Logger } from 'pino';
import { imageSpecJson } from '../api/convert/image-spec-json.ts';
import type { GrpcTls } from '../api/grpc/client.ts';
import type { GrpcConnectionLimits, GrpcServer } from '../api/grpc/server.ts';
import type { ServiceRegistration } from '../api/grpc/service.ts';
import { messageOf } from '../errors.ts';
import type { TlsFiles } from '../facade/http/tls-files.ts';
import type { SpecProvider } from '../facade/providers/provider.ts';
import { SpecStore } from '../facade/providers/spec-store.ts';
import { DEFAULT_ROOT } from './config.ts';

/** Where `strata spec` finds the spec store unless told: the one `strata up` keeps under its default root. */
export const DEFAULT_SPEC_STORE = join(DEFAULT_ROOT, 'specs');

/** The spec store kept in `dir`. */
export function openSpecStore(dir: string): SpecStore {
  return new SpecStore(dir, imageSpecJson);
}

// gRPC is loaded only by the two functions that use it: `strata spec put` and the other store commands
// then start without it (a spec put is on the way to a running workspace).

/** A remote SpecProvider at `address`; close it when done. */
export async function remoteSpecProvider(
  address: string,
  tls?: GrpcTls,
): Promise<SpecProvider & { close(): void }> {
  const { GrpcSpecProvider } = await import('../api/clients/spec-provider.ts');
  return new GrpcSpecProvider({ address, ...(tls && { tls }) });
}

/**
 * The gRPC services over a spec store: registryfacade.SpecProvider to read it, and with `writable`
 * strata.specstore.v1.SpecStore to put and remove specs (off unless asked for: whoever reaches the
 * listener could then make the facade compose any image with its registry credentials).
 */
export async function specStoreServices(store: SpecStore, writable: boolean): Promise<ServiceRegistration[]> {
  const [{ specProviderService }, writes] = await Promise.all([
    import('../api/services/spec-provider.ts'),
    writable ? import('../api/services/spec-store.ts') : undefined,
  ]);
  const services = [specProviderService(store)];
  if (writes) services.push(writes.specStoreService(store));
  return services;
}

export interface ServeSpecStoreOptions {
  /** Also serve strata.specstore.v1.SpecStore (see specStoreServices). */
  writable?: boolean;
  /** Limits of the listener's connections (unset: the server's defaults, as the builder's). */
  connections?: GrpcConnectionLimits;
  /**
   * Serve over TLS with these files (with `clientCa`, only to clients showing a certificate it signed),
   * re-read when they change and on reload(), as the facade's spec store listener does.
   */
  tls?: TlsFiles;
}

/** A served spec store: reload() re-reads its TLS files (SIGHUP); shutdown() stops it. */
export interface ServedSpecStore {
  port: number;
  reload(): Promise<void>;
  shutdown(): Promise<void>;
}

/**
 * Serves the spec store in `dir` on host:port until the returned server is shut down. With no metrics
 * endpoint to count them on, the connections the server closes on its own are logged: a refusal at the
 * cap as a warning, the routine ones (idle, shed, keepalive) at debug; so are TLS reloads.
 */
export async function serveSpecStore(
  dir: string,
  listen: { host: string; port: number },
  logger: Logger,
  options: ServeSpecStoreOptions = {},
): Promise<ServedSpecStore> {
  const [{ createGrpcServer }, tlsFiles] = await Promise.all([
    import('../api/grpc/server.ts'),
    options.tls ? import('../facade/http/tls-files.ts') : undefined,
  ]);
  const services = await specStoreServices(openSpecStore(dir), options.writable === true);
  let server: GrpcServer | undefined;
  // The certificate's one owner reads and checks the files; a rotated pair reaches the listener for the
  // connections made from then on, a bad one is logged and the pair in use stays.
  const tls =
    options.tls &&
    (await tlsFiles!.watchTlsFiles(options.tls, {
      onReload: (pair) => {
        server?.setTls(pair);
        logger.info({ what: 'spec-store-tls' }, 'reloaded');
      },
      onReloadError: (err) =>
        logger.warn({ err: messageOf(err) }, 'spec-store-tls not reloaded, the previous version stays'),
    }));
  try {
    server = createGrpcServer({
      logger,
      services,
      ...(tls && { tls: tls.value }),
      ...(options.connections && { connections: options.connections }),
      onConnectionDropped: (reason) =>
        reason === 'full'
          ? logger.warn({ reason }, 'connection refused: every connection has a call in flight')
          : logger.debug({ reason }, 'connection closed by the server'),
    });
    const s = server;
    const port = await s.listenTcp(listen.host, listen.port);
    return {
      port,
      reload: async () => {
        await tls?.reread();
      },
      shutdown: async () => {
        tls?.close();
        await s.shutdown();
      },
    };
  } catch (err) {
    tls?.close();
    await server?.shutdown();
    throw err;
  }
}
