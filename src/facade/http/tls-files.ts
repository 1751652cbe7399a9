// The HTTPS listener's certificate and key, re-read when either file changes (cert-manager and Kubernetes
// rotate them in place). A new pair is checked (parsable, key matches certificate) before it replaces the
// one in use; a bad or half-rotated pair is reported and the old one keeps serving.
import { createSecureContext } from 'node:tls';
import { invalidArgument, messageOf } from '../../errors.ts';
import { WatchedFiles } from '../watched-files.ts';

/** Paths of the PEM certificate (chain) and its key. */
export interface TlsFiles {
  cert: string;
  key: string;
}

export interface TlsPair {
  cert: Buffer;
  key: Buffer;
}

export function watchTlsFiles(
  files: TlsFiles,
  events: { onReload: (pair: TlsPair) => void; onReloadError: (err: unknown) => void; watch?: boolean },
): Promise<WatchedFiles<TlsPair>> {
  const what = `TLS certificate ${files.cert} and key ${files.key}`;
  return WatchedFiles.open([files.cert, files.key], {
    what,
    parse: ([cert, key]) => {
      try {
        createSecureContext({ cert, key });
      } catch (err) {
        throw invalidArgument(`${what}: ${messageOf(err)}`);
      }
      return { cert: cert!, key: key! };
    },
    watch: events.watch,
    onReload: events.onReload,
    onReloadError: events.onReloadError,
  });
}
