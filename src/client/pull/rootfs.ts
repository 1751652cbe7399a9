// Export what the daemon prepared for an image: a read-only View on the top chain snapshot, the tree its
// mount shows (a bind mount's directory, or an overlay mounted for the copy) copied into DIR with everything kept (`cp -a`: modes, owners, times, xattrs, links,
// hardlink groups, devices), then the view removed. It shows the snapshot itself, not a fresh unpack.
import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdir, readdir } from 'node:fs/promises';
import { resolve } from 'node:path';
import { failedPrecondition, internal, invalidArgument, isNotFound } from '../../errors.ts';
import type { Descriptor, Platform } from '../../oci/descriptor.ts';
import { withMounted } from '../../snapshots/mount.ts';
import type { DaemonApi } from '../daemon-api.ts';
import { imageChain } from './inspect.ts';

export interface ExportRootfsOptions {
  platform: Platform;
  snapshotter: string;
  signal?: AbortSignal;
}

export async function exportRootfs(
  api: DaemonApi,
  image: { name: string; target: Descriptor },
  dir: string,
  opts: ExportRootfsOptions,
): Promise<void> {
  const target = resolve(dir);
  await mkdir(target, { recursive: true });
  if ((await readdir(target)).length > 0) throw invalidArgument(`${dir} is not empty`);
  const chain = await imageChain(api, image.target, opts.platform);
  const top = chain.at(-1);
  // An image of no layers has an empty rootfs: the empty directory is it.
  if (top === undefined) return;
  if (!(await api.statSnapshot(opts.snapshotter, top))) {
    throw failedPrecondition(
      `${image.name} is not unpacked in snapshotter ${opts.snapshotter} (no snapshot ${top}); pull it first`,
    );
  }
  const key = `rootfs-export-${randomBytes(6).toString('hex')}`;
  const mounts = await api.viewSnapshot(opts.snapshotter, key, top);
  try {
    await withMounted(mounts, (tree) => copyTree(tree, target, opts.signal));
  } catch (err) {
    // The copy's failure is the one to report; a failed cleanup must not hide it.
    await api.removeSnapshot(opts.snapshotter, key).catch(() => {});
    throw err;
  }
  await api.removeSnapshot(opts.snapshotter, key).catch((err: unknown) => {
    if (!isNotFound(err)) throw err;
  });
}

/** `cp -a -T SRC DST`: DST gets SRC's contents and SRC's own metadata. */
function copyTree(src: string, dst: string, signal?: AbortSignal): Promise<void> {
  return new Promise((done, fail) => {
    // Stopped at once when aborted: a cp has nothing to tidy, and a stopped one would hold the export up.
    const cp = spawn('cp', ['-a', '-T', '--', src, dst], {
      stdio: ['ignore', 'ignore', 'pipe'],
      signal,
      killSignal: 'SIGKILL',
    });
    let stderr = '';
    cp.stderr.setEncoding('utf8').on('data', (s: string) => {
      if (stderr.length < 4096) stderr += s;
    });
    cp.once('error', fail);
    cp.once('close', (code, sig) => {
      if (code === 0) done();
      else fail(internal(`copying ${src} to ${dst} failed (${sig ?? `exit ${code}`}): ${stderr.trim()}`));
    });
  });
}
