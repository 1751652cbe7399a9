// A self-signed P-256 certificate and its key, made with openssl, for loopback TLS servers and token issuers.
import { join } from 'node:path';
import { connect } from 'node:tls';
import { runCommand } from './process.ts';

export interface SelfSignedOptions {
  keyFile: string;
  certFile: string;
  /** Subject common name. */
  cn: string;
  /** An IP subject alternative name (e.g. 127.0.0.1), for servers clients verify. */
  ip?: string;
  /** A DNS subject alternative name, for a server clients reach by name (e.g. through a proxy). */
  dns?: string;
  days?: number;
}

export async function makeSelfSignedCert(o: SelfSignedOptions): Promise<void> {
  const args = ['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes'];
  args.push('-keyout', o.keyFile, '-out', o.certFile, '-days', String(o.days ?? 7), '-subj', `/CN=${o.cn}`);
  const san = [...(o.ip ? [`IP:${o.ip}`] : []), ...(o.dns ? [`DNS:${o.dns}`] : [])];
  if (san.length > 0) args.push('-addext', `subjectAltName=${san.join(',')}`);
  await runCommand('openssl', args, { timeoutMs: 30_000 });
}

/**
 * The server certificate of a loopback TLS listener in `dir`: server.crt and server.key, for 127.0.0.1, with
 * subject CN `cn` (a rotation writes the same files with another CN).
 */
export function makeServerCert(dir: string, cn: string): Promise<void> {
  return makeSelfSignedCert({
    certFile: join(dir, 'server.crt'),
    keyFile: join(dir, 'server.key'),
    cn,
    ip: '127.0.0.1',
  });
}

/**
 * The files of a mutual-TLS listener in `dir`: the server's (makeServerCert), client.crt/key (CN platform),
 * self-signed so that it is its own client CA, and other.crt/key (CN stranger), which that CA did not sign.
 */
export async function makeMutualTlsFiles(dir: string, serverCn: string): Promise<void> {
  await makeServerCert(dir, serverCn);
  for (const [name, cn] of [
    ['client', 'platform'],
    ['other', 'stranger'],
  ] as const) {
    await makeSelfSignedCert({ certFile: join(dir, `${name}.crt`), keyFile: join(dir, `${name}.key`), cn });
  }
}

/** The CLI's client TLS flags for makeMutualTlsFiles's files in `dir`: trusting the server, showing client.crt. */
export function mutualTlsClientFlags(dir: string): string[] {
  return [
    ...['--tls-ca', join(dir, 'server.crt')],
    ...['--tls-client-cert', join(dir, 'client.crt')],
    ...['--tls-client-key', join(dir, 'client.key')],
  ];
}

/** The subject CN of the certificate a TLS server on 127.0.0.1:`port` presents to a new connection. */
export function servedCommonName(port: number): Promise<string> {
  return new Promise<string>((resolve, reject) => {
    const s = connect({ host: '127.0.0.1', port, rejectUnauthorized: false }, () => {
      const cn = s.getPeerCertificate().subject.CN;
      s.end();
      resolve(Array.isArray(cn) ? cn.join(',') : String(cn));
    });
    s.on('error', reject);
  });
}
