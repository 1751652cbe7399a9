// Hosted repositories over a daemon's content store and metadata database. `strata up` hands over the
// daemon's own parts (one store, one database, one garbage collector, in one process); a facade alone
// opens them on a daemon root itself and takes the root's lock as a daemon does, since two collectors
// deciding over one store would each delete what only the other's records hold. Either way the collector
// also runs on a timer, so abandoned uploads and expired holds go without any request asking for it.
import { mkdir } from 'node:fs/promises';
import { join } from 'node:path';
import type { Logger } from 'pino';
import { ContentStore } from '../content/store.ts';
import { HostedRegistry } from '../hosted/registry.ts';
import { backendRef, ContentView } from '../metadata/content.ts';
import { MetadataDb } from '../metadata/db.ts';
import { GcRunner } from '../metadata/gc-runner.ts';
import { ImageNames } from '../metadata/image-names.ts';
import { ImageStore } from '../metadata/images.ts';
import { RepositoryBlobs } from '../metadata/repository-blobs.ts';
import { lockRoot } from './root-lock.ts';
import { ignoreGone } from './wiring.ts';

/** Between timed collections; deletions schedule their own run at once. */
const SWEEP_INTERVAL_MS = 3600 * 1000;

/** The daemon parts hosted repositories stand on. */
export interface HostedStorage {
  content: ContentStore;
  db: MetadataDb;
  /** The daemon's image store, so the daemon's clients hear of the images pushed here. */
  images: ImageStore;
  gc: GcRunner;
  logger: Logger;
}

export interface HostedParts {
  registry: HostedRegistry;
  content: ContentStore;
  gc: GcRunner;
  /** Stops the timed collections, and closes the storage when it was opened here. */
  close(): Promise<void>;
}

/** Hosted repositories on storage someone else owns and closes (the daemon's, in `strata up`). */
export function hostedOn(storage: HostedStorage): HostedParts {
  const { content, db, gc, images } = storage;
  const timer = setInterval(() => gc.schedule(), SWEEP_INTERVAL_MS);
  timer.unref();
  const registry = new HostedRegistry({
    view: new ContentView({ store: content, db }),
    images,
    names: new ImageNames(db),
    members: new RepositoryBlobs(db),
    logger: storage.logger,
  });
  return {
    registry,
    content,
    gc,
    async close() {
      clearInterval(timer);
      await registry.close();
    },
  };
}

/** Opens the content store and metadata database of the daemon root `root`, under its lock, for a facade. */
export async function openHosted(root: string, logger: Logger): Promise<HostedParts> {
  await mkdir(root, { recursive: true });
  const release = await lockRoot(root, 'facade');
  let content: ContentStore;
  let db: MetadataDb;
  try {
    content = await ContentStore.open(join(root, 'content'));
    db = new MetadataDb(join(root, 'meta.db'));
  } catch (err) {
    await release();
    throw err;
  }
  const gc = new GcRunner({
    db,
    content,
    logger: logger.child({ component: 'gc' }),
    removeIngest: (ns, ref) => content.abort(backendRef(ns, ref)).catch(ignoreGone),
  });
  // No daemon serves this root meanwhile (the lock says so): nobody to announce image changes to.
  const images = new ImageStore(db);
  const hosted = hostedOn({ content, db, gc, images, logger: logger.child({ component: 'hosted' }) });
  return {
    ...hosted,
    async close() {
      await hosted.close();
      await gc.close();
      await content.close();
      db.close();
      await release();
    },
  };
}
