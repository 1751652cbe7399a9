// `strata facade` as the benchmarks run it: a child process with its own config file, cache dir and log in
// a given work dir, --log-level warn (docker-registry's access log is off too), ready once /readyz says so.
import { mkdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { spawnFacade } from '../test/helpers/facade.ts';
import { freePort } from '../test/helpers/ports.ts';

export interface FacadeProcessOptions {
  /** Holds the config, the cache and the log (created if missing). */
  dir: string;
  /** The `specProviders:` value, as YAML flow, e.g. `{ fixedFile: "…" }`. */
  specProviders: string;
  /** Registries reached over plain HTTP. */
  plainHttpHosts: string[];
  cacheMaxBytes?: string;
  /** More config lines. */
  extra?: string[];
}

export interface FacadeProcess {
  host: string;
  url: string;
  pid: number;
  cacheDir: string;
  stop(): Promise<void>;
}

export async function startFacadeProcess(o: FacadeProcessOptions): Promise<FacadeProcess> {
  await mkdir(o.dir, { recursive: true });
  const host = `127.0.0.1:${await freePort()}`;
  const url = `http://${host}`;
  const cacheDir = join(o.dir, 'cache');
  const configFile = join(o.dir, 'facade.yaml');
  await writeFile(
    configFile,
    [
      `listen: "${host}"`,
      `specProviders: ${o.specProviders}`,
      `cache: { dir: "${cacheDir}", maxBytes: ${o.cacheMaxBytes ?? '4GiB'} }`,
      `plainHttpHosts: ${JSON.stringify(o.plainHttpHosts)}`,
      ...(o.extra ?? []),
      '',
    ].join('\n'),
  );
  const server = await spawnFacade({
    config: configFile,
    url,
    logFile: join(o.dir, 'facade.log'),
    logLevel: 'warn',
  });
  return { host, url, pid: server.proc.pid!, cacheDir, stop: () => server.stop() };
}

/** A facade in `work/facade` serving one fixed spec, `bench`: `baseRef` with `ideRef`, from `registry`. */
export async function startFixedSpecFacade(
  work: string,
  registry: string,
  spec: { baseRef: string; ideRef: string },
): Promise<FacadeProcess> {
  const fixedFile = join(work, 'fixed.yaml');
  await writeFile(fixedFile, `bench: { baseRef: "${spec.baseRef}", ideRef: "${spec.ideRef}" }\n`);
  return startFacadeProcess({
    dir: join(work, 'facade'),
    specProviders: `{ fixedFile: "${fixedFile}" }`,
    plainHttpHosts: [registry],
  });
}
