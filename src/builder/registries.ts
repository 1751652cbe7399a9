// The registry clients of the builder: one pair (plain, retrying) with the installation's credentials
// for the base and workspace repositories, and clients per request credential policy, kept in a bounded
// cache keyed by what credentials the policy can hand out. `use_retry_client` picks the retrying one:
// up to four attempts of 15 s each, asking again after a 500 too, as the anchor's retry client; the plain
// one tries once.
import { LRUCache } from 'lru-cache';
import { RegistryClient } from '../registry/client.ts';
import type { CredentialStore } from '../registry/credentials.ts';
import { canonicalHost, type HostConfig } from '../registry/hosts.ts';
import { RETRY_STATUSES_WITH_5XX } from '../registry/retry.ts';
import type { AuthPolicy } from './registry-auth.ts';

export interface RegistryAccessOptions {
  hosts: HostConfig;
  installation: CredentialStore;
}

const PLAIN = { retry: { attempts: 1 } };
const RETRYING = {
  retry: { attempts: 4, baseDelayMs: 500, statuses: RETRY_STATUSES_WITH_5XX },
  timeouts: { headersMs: 15_000, connectMs: 15_000 },
};

export class RegistryAccess {
  private readonly options: RegistryAccessOptions;
  private readonly own: [RegistryClient, RegistryClient];
  // Not closed when pushed out: a build may still be using it (its idle connections close by themselves).
  private readonly byPolicy = new LRUCache<string, RegistryClient>({ max: 64 });

  constructor(options: RegistryAccessOptions) {
    this.options = options;
    this.own = [this.make(options.installation, false), this.make(options.installation, true)];
  }

  private make(credentials: CredentialStore, retry: boolean): RegistryClient {
    return new RegistryClient({ hosts: this.options.hosts, credentials, ...(retry ? RETRYING : PLAIN) });
  }

  /** With the installation's credentials: the builder's own repositories. */
  installation(retry = false): RegistryClient {
    return this.own[retry ? 1 : 0];
  }

  /** With what a request's policy allows: the images a request names. */
  forPolicy(policy: AuthPolicy, retry = false): RegistryClient {
    const key = `${policy.fingerprint}:${retry}`;
    let client = this.byPolicy.get(key);
    if (!client) {
      client = this.make(policy.store(), retry);
      this.byPolicy.set(key, client);
    }
    return client;
  }

  /**
   * For copying a request's image into the workspace repository: the installation's credentials for the
   * workspace registry, the policy's for every other. The source was resolved with the policy's first,
   * so the request can read it.
   */
  forCopy(policy: AuthPolicy, workspaceDomain: string, retry = false): RegistryClient {
    const key = `${policy.fingerprint}:copy:${workspaceDomain}:${retry}`;
    let client = this.byPolicy.get(key);
    if (!client) {
      const installation = this.options.installation;
      const own = canonicalHost(workspaceDomain);
      client = this.make(
        {
          get: (host, signal) =>
            canonicalHost(host) === own
              ? installation.get(host, signal)
              : policy.forDomain(canonicalHost(host), signal),
        },
        retry,
      );
      this.byPolicy.set(key, client);
    }
    return client;
  }

  async close(): Promise<void> {
    const cached = [...this.byPolicy.values()];
    this.byPolicy.clear();
    await Promise.all([...cached, ...this.own].map((c) => c.close()));
  }
}
