// TLS for the CLI's gRPC clients (`strata build`, `strata spec … --address`): plain unless a flag asks for
// it. --tls-ca trusts a private CA (system roots otherwise); a client certificate answers a server that
// wants one (the spec store's listener with a client CA).
import { readFile } from 'node:fs/promises';
import { resolve } from 'node:path';
import type { Command } from 'commander';
import type { GrpcTls } from '../api/grpc/client.ts';
import { invalidArgument } from '../errors.ts';

export interface ClientTlsFlags {
  tlsCa?: string;
  tlsClientCert?: string;
  tlsClientKey?: string;
}

/** Adds the client TLS flags to `cmd`. */
export function withClientTls<C extends Command>(cmd: C): C {
  cmd
    .option('--tls-ca <file>', "connect over TLS, trusting this PEM CA for the server's certificate")
    .option('--tls-client-cert <file>', 'connect over TLS, showing this PEM client certificate')
    .option('--tls-client-key <file>', "PEM private key of --tls-client-cert's certificate");
  return cmd;
}

/** The TLS the flags ask for, files read; undefined for a plain connection. */
export async function clientTlsFrom(f: ClientTlsFlags): Promise<GrpcTls | undefined> {
  if (f.tlsCa === undefined && f.tlsClientCert === undefined && f.tlsClientKey === undefined)
    return undefined;
  if ((f.tlsClientCert === undefined) !== (f.tlsClientKey === undefined)) {
    throw invalidArgument('--tls-client-cert and --tls-client-key go together');
  }
  const read = (path: string) => readFile(resolve(path));
  const tls: GrpcTls = {};
  if (f.tlsCa !== undefined) tls.ca = await read(f.tlsCa);
  if (f.tlsClientCert !== undefined && f.tlsClientKey !== undefined) {
    tls.cert = await read(f.tlsClientCert);
    tls.key = await read(f.tlsClientKey);
  }
  return tls;
}
