// What the facade's prefetch reports: metrics and log lines for each job's attempts.
import type { Logger } from 'pino';
import { messageOf } from '../errors.ts';
import type { FacadeMetrics } from '../facade/http/metrics.ts';
import type { PrefetchEvents, PrefetchSummary } from '../facade/prefetch.ts';

export function prefetchLog(metrics: FacadeMetrics, log: Logger): PrefetchEvents {
  const finished = (id: string, result: string, summary: PrefetchSummary) => {
    metrics.prefetchesFinished.inc({ result });
    for (const [outcome, n] of Object.entries(summary.outcomes)) metrics.prefetchBlobs.inc({ outcome }, n);
    if (summary.failedBlobs > 0) metrics.prefetchBlobs.inc({ outcome: 'failed' }, summary.failedBlobs);
    metrics.prefetchBytes.inc(summary.bytes);
    return { id, manifest: summary.manifestDigest, ...summary };
  };
  // The jobs failing now, each waiting to try again. An outage fails every stored spec's job (hundreds on a
  // node) and each retries for as long as it lasts: the first to fail warns, the others' failures and
  // every retry are debug lines (and counted), until the jobs complete or give up. Giving up warns.
  const retrying = new Set<string>();
  return {
    started: (id) => {
      metrics.prefetchesStarted.inc();
      log.debug({ id }, 'prefetch started');
    },
    completed: (id, s) => {
      retrying.delete(id);
      log.info(finished(id, 'completed', s), 'prefetch complete');
    },
    failed: (id, err, s, retryInMs) => {
      const fields = {
        ...finished(id, retryInMs === undefined ? 'failed' : 'retried', s),
        err: messageOf(err),
        ...(retryInMs === undefined ? {} : { retryInMs }),
      };
      const first = retrying.size === 0;
      if (retryInMs === undefined) retrying.delete(id);
      else retrying.add(id);
      if (first || retryInMs === undefined) log.warn(fields, 'prefetch failed');
      else log.debug(fields, 'prefetch failed');
    },
    cancelled: (id, s, reason) => {
      retrying.delete(id);
      log.info({ ...finished(id, 'cancelled', s), reason: messageOf(reason) }, 'prefetch cancelled');
    },
    skipped: (id) => log.warn({ id }, 'prefetch skipped: too many specs waiting'),
    storeError: (err) => log.warn({ err: messageOf(err) }, 'spec store not watched or listed'),
  };
}
