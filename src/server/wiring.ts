// The composition root: opens the state under ROOT, builds the stores, the garbage collector and the gRPC
// services over them. Nothing here has behaviour of its own; it only connects parts.
import { join } from 'node:path';
import type { Logger } from 'pino';
import type { ServiceRegistration } from '../api/grpc/service.ts';
import { contentService } from '../api/services/content.ts';
import { diffService } from '../api/services/diff.ts';
import { earlyImagesService } from '../api/services/early-images.ts';
import { EventExchange, eventsService } from '../api/services/events.ts';
import { imageEvents, imagesService } from '../api/services/images.ts';
import { introspectionService } from '../api/services/introspection.ts';
import { leasesService } from '../api/services/leases.ts';
import { namespacesService } from '../api/services/namespaces.ts';
import { snapshotsService } from '../api/services/snapshots.ts';
import { versionService } from '../api/services/version.ts';
import { ContentStore } from '../content/store.ts';
import { isNotFound, isUnavailable, messageOf } from '../errors.ts';
import { backendRef, ContentView } from '../metadata/content.ts';
import { ContentMeta } from '../metadata/content-labels.ts';
import { MetadataDb } from '../metadata/db.ts';
import { GcRunner } from '../metadata/gc-runner.ts';
import { ImageStore } from '../metadata/images.ts';
import { LeaseStore } from '../metadata/leases.ts';
import { NamespaceStore } from '../metadata/namespaces.ts';
import { Differ } from '../snapshots/differ.ts';
import { NativeSnapshotter } from '../snapshots/native/snapshotter.ts';
import { OverlaySnapshotter } from '../snapshots/overlay/snapshotter.ts';
import type { Snapshotter } from '../snapshots/snapshotter.ts';
import { VERSION } from '../version.ts';
import type { DaemonConfig } from './config.ts';
import { pidNamespace, serverUuid, sourceRevision } from './identity.ts';
import type { DaemonMetrics } from './metrics.ts';
import { pluginList } from './plugins.ts';

/** An ingest already aborted, or being written right now (then it is not garbage after all). */
export function ignoreGone(err: unknown): void {
  if (!isNotFound(err) && !isUnavailable(err)) throw err;
}

export interface DaemonParts {
  db: MetadataDb;
  content: ContentStore;
  contentMeta: ContentMeta;
  view: ContentView;
  images: ImageStore;
  leases: LeaseStore;
  namespaces: NamespaceStore;
  gc: GcRunner;
  /** Snapshotters by name. */
  snapshotters: ReadonlyMap<string, Snapshotter>;
  uuid: string;
  services: ServiceRegistration[];
  /** Where the services publish; closed before the gRPC server shuts down. */
  events: EventExchange;
  /** Releases what wiring opened (the gRPC server is not part of it). */
  close(): Promise<void>;
}

export async function wireDaemon(
  config: DaemonConfig,
  logger: Logger,
  metrics?: DaemonMetrics,
): Promise<DaemonParts> {
  const metadataPath = join(config.root, 'meta.db');
  const contentRoot = join(config.root, 'content');
  const uuid = await serverUuid(config.root);
  const content = await ContentStore.open(contentRoot);
  const db = new MetadataDb(metadataPath);
  try {
    const events = new EventExchange();
    metrics?.watchEventSubscribers(() => events.subscribers);
    // Every image write is announced, whoever makes it (either image API, hosted repositories on this store).
    const images = new ImageStore(db, { onChange: imageEvents(events) });
    const leases = new LeaseStore(db);
    const namespaces = new NamespaceStore(db);
    const contentMeta = new ContentMeta(db);
    const view = new ContentView({ store: content, db });
    const snapshotters = await openSnapshotters(config, db, logger.child({ component: 'snapshots' }));
    const differ = new Differ({ snapshotters: snapshotters.values(), content: view });
    // An ingest whose record is gone (collected, or deleted with its namespace) loses its partial data.
    const removeIngest = (ns: string, ref: string) => content.abort(backendRef(ns, ref)).catch(ignoreGone);
    const gc = new GcRunner({
      db,
      content,
      logger: logger.child({ component: 'gc' }),
      ...config.gc,
      ...(metrics && { onRun: (stats) => metrics.gcRun(stats) }),
      removeIngest,
      // Collected snapshot records leave their directories behind; the snapshotter removes those.
      removeSnapshots: async () => {
        for (const sn of snapshotters.values()) await sn.cleanup();
      },
    });
    const collectGarbage = () => gc.collect();

    const services: ServiceRegistration[] = [
      imagesService({ images, collectGarbage }),
      earlyImagesService({ images }),
      contentService({ view, events }),
      leasesService({ leases, collectGarbage }),
      namespacesService({
        namespaces,
        // ctr falls back to overlayfs by itself, and containerd reports no such label: only another
        // default is announced, so `ctr namespaces ls` shows what it shows against containerd.
        defaultLabels:
          config.snapshotter === 'overlayfs'
            ? {}
            : { 'containerd.io/defaults/snapshotter': config.snapshotter },
        removeIngest,
        events,
      }),
      snapshotsService({ snapshotters, events }),
      eventsService({ events, regex: db.regex }),
      diffService({ differ }),
      versionService({ version: VERSION, revision: sourceRevision() }),
    ];
    const names = [
      ...services.map((s) => s.service.typeName),
      'containerd.services.introspection.v1.Introspection',
    ];
    services.push(
      introspectionService({
        uuid,
        pid: process.pid,
        pidns: pidNamespace(),
        plugins: pluginList({
          services: names,
          contentRoot,
          metadataPath,
          snapshotters: [...snapshotters.values()].map((sn) => ({ id: sn.name, root: sn.root })),
        }),
      }),
    );
    return {
      db,
      content,
      contentMeta,
      view,
      images,
      leases,
      namespaces,
      gc,
      snapshotters,
      uuid,
      events,
      services: metrics ? services.map((s) => metrics.instrument(s)) : services,
      async close() {
        await gc.close();
        await differ.close();
        await content.close();
        for (const sn of snapshotters.values()) sn.close();
        db.close();
      },
    };
  } catch (err) {
    db.close();
    throw err;
  }
}

/**
 * Both snapshotters, under ROOT/snapshots/<name>. overlayfs is left out, with a warning, when the root
 * cannot do overlay and it is not the default; as the default its refusal stops the daemon.
 */
async function openSnapshotters(
  config: DaemonConfig,
  db: MetadataDb,
  logger: Logger,
): Promise<Map<string, Snapshotter>> {
  const root = (name: string) => join(config.root, 'snapshots', name);
  const out = new Map<string, Snapshotter>();
  try {
    const overlay = await OverlaySnapshotter.open({ root: root('overlayfs'), db, logger });
    out.set(overlay.name, overlay);
  } catch (err) {
    if (config.snapshotter === 'overlayfs') throw err;
    logger.warn({ err: messageOf(err) }, 'overlayfs snapshotter not loaded');
  }
  const native = await NativeSnapshotter.open({ root: root('native'), db, logger });
  out.set(native.name, native);
  return out;
}
