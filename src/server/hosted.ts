// Opens the hosted repositories on a daemon root: the content store and metadata database a daemon keeps
// there, and a garbage collector over them that also runs on a timer, so abandoned uploads and expired
// holds go without any request asking for it. The root's lock is taken as a daemon takes it: two
// collectors deciding over one store would each delete what only the other's records hold.
import { mkdir } from 'node:fs/promises';
import { join } from 'node:path';
import type { Logger } from 'pino';
import { ContentStore } from '../content/store.ts';
import { HostedRegistry } from '../hosted/registry.ts';
import { backendRef, ContentView } from '../metadata/content.ts';
import { MetadataDb } from '../metadata/db.ts';
import { GcRunner } from '../metadata/gc-runner.ts';
import { ImageStore } from '../metadata/images.ts';
import { lockRoot } from './root-lock.ts';
import { ignoreGone } from './wiring.ts';

/** Between timed collections; deletions schedule their own run at once. */
const SWEEP_INTERVAL_MS = 3600 * 1000;

export interface HostedParts {
  registry: HostedRegistry;
  content: ContentStore;
  gc: GcRunner;
  close(): Promise<void>;
}

export async function openHosted(root: string, logger: Logger): Promise<HostedParts> {
  await mkdir(root, { recursive: true });
  const release = await lockRoot(root);
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
  const timer = setInterval(() => gc.schedule(), SWEEP_INTERVAL_MS);
  timer.unref();
  const registry = new HostedRegistry({
    view: new ContentView({ store: content, db }),
    images: new ImageStore(db),
  });
  return {
    registry,
    content,
    gc,
    async close() {
      clearInterval(timer);
      await gc.close();
      await content.close();
      db.close();
      await release();
    },
  };
}
