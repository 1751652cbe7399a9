// A TLS listener's certificate and key (and client CA), re-read when any of them changes (cert-manager
// and Kubernetes rotate them in place). A new pair is checked (parsable, key matches certificate) before it replaces the
// one in use; a bad or half-rotated pair is reported and the old one keeps serving.
import { createSecureContext } from 'node:tls';
import { invalidArgument, messageOf } from '../../errors.ts';
import { WatchedFiles } from '../watched-files.ts';

/**
 * Paths of the PEM certificate (chain) and its key; `clientCa`, where a listener takes one, the CA whose
 * certificates clients must present.
 */
export interface TlsFiles {
  cert: string;
  key: string;
  clientCa?: string;
}

export interface TlsPair {
  cert: Buffer;
  key: Buffer;
  clientCa?: Buffer;
}

export function watchTlsFiles(
  files: TlsFiles,
  events: { onReload: (pair: TlsPair) => void; onReloadError: (err: unknown) => void; watch?: boolean },
): Promise<WatchedFiles<TlsPair>> {
  const what = `TLS certificate ${files.cert} and key ${files.key}${files.clientCa ? ` (client CA ${files.clientCa})` : ''}`;
  const paths = files.clientCa ? [files.cert, files.key, files.clientCa] : [files.cert, files.key];
  return WatchedFiles.open(paths, {
    what,
    parse: ([cert, key, clientCa]) => {
      try {
        createSecureContext({ cert, key, ...(clientCa && { ca: clientCa }) });
      } catch (err) {
        throw invalidArgument(`${what}: ${messageOf(err)}`);
      }
      return { cert: cert!, key: key!, ...(clientCa && { clientCa }) };
    },
    watch: events.watch,
    onReload: events.onReload,
    onReloadError: events.onReloadError,
  });
}
