// The facade's Prometheus metrics, registered on the registry the caller passes in.
import { Counter, Gauge, Histogram, type Registry } from 'prom-client';
import type { CacheOutcome } from '../blobs/cache.ts';
import type { FacadeObserver } from '../service.ts';

export class FacadeMetrics implements FacadeObserver {
  readonly requests: Counter<'route' | 'method' | 'status'>;
  readonly duration: Histogram<'route'>;
  readonly bytesServed: Counter<'source'>;
  readonly upstreamFetches: Counter<'source'>;
  readonly blobReads: Counter<'source' | 'outcome'>;
  readonly cacheHits: Counter;
  readonly cacheMisses: Counter;
  readonly joinedFetches: Counter;
  readonly inFlight: Gauge;
  readonly cacheBytes: Gauge;
  readonly compositions: Counter;
  readonly staleTags: Counter;
  readonly fixedSpecLoads: Counter<'result'>;
  readonly reloads: Counter<'what' | 'result'>;
  readonly connectionsDropped: Counter<'reason'>;
  readonly connections: Gauge;
  readonly prefetchesStarted: Counter;
  readonly prefetchesFinished: Counter<'result'>;
  readonly prefetchBlobs: Counter<'outcome'>;
  readonly prefetchBytes: Counter;
  readonly sharedReads: Counter<'kind' | 'outcome'>;
  readonly sharedWrites: Counter<'kind' | 'outcome'>;
  readonly sharedOutages: Counter;
  readonly sharedUp: Gauge;
  /** Set once the shared cache is wired: whether it is in use (1), out of use (0), or not configured (-1). */
  sharedState: () => number = () => -1;
  /** Set once the server listens: the number of open client connections. */
  openConnections: () => number = () => 0;
  /** Set once the cache is open: 1 while its fills are paused on a failing disk. */
  cacheDiskFailing: () => number = () => 0;
  readonly cacheDiskFailingGauge: Gauge;

  constructor(registry: Registry, cacheBytes: () => number) {
    const registers = [registry];
    this.requests = new Counter({
      name: 'strata_facade_http_requests_total',
      help: 'HTTP requests answered, by route, method and status',
      labelNames: ['route', 'method', 'status'],
      registers,
    });
    this.duration = new Histogram({
      name: 'strata_facade_http_request_duration_seconds',
      help: 'Time to answer a request, body included',
      labelNames: ['route'],
      buckets: [0.005, 0.025, 0.1, 0.5, 1, 2.5, 10, 60, 300],
      registers,
    });
    this.bytesServed = new Counter({
      name: 'strata_facade_bytes_served_total',
      help: 'Blob and manifest bytes written to clients, by source',
      labelNames: ['source'],
      registers,
    });
    this.upstreamFetches = new Counter({
      name: 'strata_facade_upstream_fetches_total',
      help: 'Blob fetches from registries, content-layer URLs or spec bytes into the cache (resumes count)',
      labelNames: ['source'],
      registers,
    });
    this.blobReads = new Counter({
      name: 'strata_facade_blob_reads_total',
      help: 'Blob reads set up, by source and how they were served (hit, miss, joined, local, redirect, head)',
      labelNames: ['source', 'outcome'],
      registers,
    });
    this.cacheHits = new Counter({
      name: 'strata_facade_cache_hits_total',
      help: 'Blob reads served from the disk cache',
      registers,
    });
    this.cacheMisses = new Counter({
      name: 'strata_facade_cache_misses_total',
      help: 'Blob reads that started a cache fill',
      registers,
    });
    this.joinedFetches = new Counter({
      name: 'strata_facade_joined_fetches_total',
      help: 'Blob reads that followed a fill already running',
      registers,
    });
    this.inFlight = new Gauge({
      name: 'strata_facade_http_in_flight',
      help: 'Requests being answered',
      registers,
    });
    this.cacheBytes = new Gauge({
      name: 'strata_facade_cache_bytes',
      help: 'Bytes held or reserved in the disk blob cache',
      registers,
      collect() {
        this.set(cacheBytes());
      },
    });
    const diskFailing = () => this.cacheDiskFailing();
    this.cacheDiskFailingGauge = new Gauge({
      name: 'strata_facade_cache_disk_failing',
      help: 'Whether the disk cache stopped filling after a disk write failed for another reason than room (1): blobs are streamed uncached until a probe fill succeeds',
      registers,
      collect() {
        this.set(diskFailing());
      },
    });
    this.compositions = new Counter({
      name: 'strata_facade_compositions_total',
      help: 'Images composed from specs',
      registers,
    });
    this.staleTags = new Counter({
      name: 'strata_facade_stale_tags_total',
      help: "Tag resolutions answered with the tag's last digest because its registry could not be reached",
      registers,
    });
    this.fixedSpecLoads = new Counter({
      name: 'strata_facade_fixed_spec_loads_total',
      help: 'Loads of the fixed-spec file, by result (ok, or refused: the specs loaded before stay)',
      labelNames: ['result'],
      registers,
    });
    this.reloads = new Counter({
      name: 'strata_facade_reloads_total',
      help: 'Reloads of watched files (htpasswd, token keys, TLS certificate) by result (ok, or refused: the previous version stays)',
      labelNames: ['what', 'result'],
      registers,
    });
    this.connectionsDropped = new Counter({
      name: 'strata_facade_connections_dropped_total',
      help: 'Client connections closed by the guard (per-client cap, full, shed idle, header timeout)',
      labelNames: ['reason'],
      registers,
    });
    this.prefetchesStarted = new Counter({
      name: 'strata_facade_prefetches_started_total',
      help: 'Prefetch attempts of specs put in the own spec store that started (a retry is one more)',
      registers,
    });
    this.prefetchesFinished = new Counter({
      name: 'strata_facade_prefetches_finished_total',
      help: 'Prefetch attempts that ended, by result (completed; retried: failed, tried again after a pause; failed: failed, given up; cancelled: the spec was removed or put again, or the facade stopped)',
      labelNames: ['result'],
      registers,
    });
    this.prefetchBlobs = new Counter({
      name: 'strata_facade_prefetch_blobs_total',
      help: 'Blobs prefetched, by outcome (miss: fetched, joined: a fill in flight, hit: cached, bypass: no room or a failing cache disk, failed)',
      labelNames: ['outcome'],
      registers,
    });
    this.prefetchBytes = new Counter({
      name: 'strata_facade_prefetch_bytes_total',
      help: 'Bytes fetched into the blob cache by prefetches',
      registers,
    });
    this.sharedReads = new Counter({
      name: 'strata_facade_redis_reads_total',
      help: 'Reads of the cache shared by replicas, by kind and outcome (hit, miss, corrupt: ignored and replaced, error, skipped: Redis out of use)',
      labelNames: ['kind', 'outcome'],
      registers,
    });
    this.sharedWrites = new Counter({
      name: 'strata_facade_redis_writes_total',
      help: 'Writes to the cache shared by replicas, by kind and outcome (ok, error, skipped, too-large, refused: Redis answered with an error, full or read-only)',
      labelNames: ['kind', 'outcome'],
      registers,
    });
    this.sharedOutages = new Counter({
      name: 'strata_facade_redis_outages_total',
      help: 'Times Redis failed or did not answer in time and was taken out of use until it answered again',
      registers,
    });
    const sharedState = () => this.sharedState();
    this.sharedUp = new Gauge({
      name: 'strata_facade_redis_up',
      help: 'Whether the cache shared by replicas is in use (1), out of use after a failure (0), or not configured (-1)',
      registers,
      collect() {
        this.set(sharedState());
      },
    });
    const open = () => this.openConnections();
    this.connections = new Gauge({
      name: 'strata_facade_connections',
      help: 'Open client connections',
      registers,
      collect() {
        this.set(open());
      },
    });
  }

  blobServed(source: string, outcome: CacheOutcome | 'local' | 'redirect' | 'head'): void {
    this.blobReads.inc({ source, outcome });
    if (outcome === 'hit') this.cacheHits.inc();
    else if (outcome === 'miss') this.cacheMisses.inc();
    else if (outcome === 'joined') this.joinedFetches.inc();
  }

  upstreamFetch(source: string): void {
    this.upstreamFetches.inc({ source });
  }

  composed(): void {
    this.compositions.inc();
  }

  staleTag(): void {
    this.staleTags.inc();
  }
}
