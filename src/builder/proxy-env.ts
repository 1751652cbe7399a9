// The proxy settings the builder hands to its child processes (git, buildah), which run with an
// environment of their own. docker build gives RUN steps the proxy variables of the user's docker config
// under both spellings (HTTP_PROXY and http_proxy, …) as predefined build args, kept out of the image's
// history; buildah passes the proxy variables of its own environment to RUN steps (its --http-proxy,
// on by default) the same way, without recording them. So the builder sets both spellings in buildah's
// environment and never makes them build args: nothing of a proxy reaches the image or the build key.
// Tools read different spellings (curl, and so git, ignores HTTP_PROXY; Go takes it first), so each
// variable goes out under both names with one value, picked as Strata's registry client picks it.

import { proxyVariable } from '../registry/proxy.ts';

/** The variables docker build predefines as build args (curl reads them all; Go the first three). */
const NAMES = ['HTTP_PROXY', 'HTTPS_PROXY', 'NO_PROXY', 'FTP_PROXY', 'ALL_PROXY'] as const;

/** Proxy variables for a child's environment: each one set under both its uppercase and lowercase name. */
export type ProxyVariables = Readonly<Record<string, string>>;

/**
 * The proxy variables of `env`, each under both names. The uppercase name wins when both are set, and an
 * empty one counts as unset, as in Go (and so in Strata's registry client and in buildah's pulls). When
 * REQUEST_METHOD is set (a CGI program) HTTP_PROXY may come from a client's `Proxy:` header: only
 * http_proxy is taken then, as curl always does and Go's refusal of HTTP_PROXY there amounts to.
 */
export function proxyVariables(env: Readonly<Record<string, string | undefined>>): ProxyVariables {
  const out: Record<string, string> = {};
  for (const name of NAMES) {
    const lower = name.toLowerCase();
    const value =
      name === 'HTTP_PROXY' && env.REQUEST_METHOD ? env[lower] || undefined : proxyVariable(env, name);
    if (value) {
      out[name] = value;
      out[lower] = value;
    }
  }
  return out;
}

/**
 * The variables for git. Go never sends requests for localhost or loopback addresses through a proxy,
 * whatever NO_PROXY says; curl does unless NO_PROXY names them. They are added to git's NO_PROXY, so a
 * git remote is reached directly exactly when a registry on the same host would be.
 */
export function gitProxyVariables(vars: ProxyVariables): ProxyVariables {
  const proxied = Object.keys(vars).some((k) => k.toUpperCase() !== 'NO_PROXY');
  if (!proxied) return vars;
  const noProxy = [vars.NO_PROXY, 'localhost', '127.0.0.0/8', '::1'].filter(Boolean).join(',');
  return { ...vars, NO_PROXY: noProxy, no_proxy: noProxy };
}
