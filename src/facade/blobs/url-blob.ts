// A content layer at a URL as a Blob, read over the registry client's HTTP layer (pooled connections,
// timeouts, bounded retries, extra CAs) with the same ranged, resumed and verified GET as a registry
// blob. No credentials are ever sent to these URLs.
import type { Blob } from '../../oci/blob.ts';
import type { Descriptor } from '../../oci/descriptor.ts';
import { discard, type HttpClient } from '../../registry/http.ts';
import { registryError } from '../../registry/registry-errors.ts';
import { openBlobRange } from '../../registry/resumable-read.ts';

export function urlBlob(http: HttpClient, url: URL, desc: Descriptor, maxResumes = 3): Blob {
  const what = `fetch content layer from ${url.host}`;
  return {
    descriptor: desc,
    open: (options = {}) =>
      openBlobRange({
        url,
        desc,
        options,
        what,
        maxResumes,
        get: (headers) => http.send({ method: 'GET', url, headers, signal: options.signal, what }),
        fail: async (res) => {
          await discard(res.body);
          return registryError(res.status, [], what);
        },
      }),
  };
}
