// `strata rootfs REF DIR`: copy the rootfs the daemon prepared for an image into DIR.
import type { Command } from 'commander';
import { findImage, resolveSnapshotter } from '../client/pull/pull.ts';
import { exportRootfs } from '../client/pull/rootfs.ts';
import { defaultPlatform, parsePlatform } from '../oci/platform.ts';
import { type DaemonFlags, withDaemon, withDaemonFlags } from './daemon-flags.ts';
import { interruptSignal } from './interrupt.ts';

interface RootfsFlags extends DaemonFlags {
  platform?: string;
  snapshotter?: string;
}

export function registerRootfs(program: Command): void {
  withDaemonFlags(
    program
      .command('rootfs <ref> <dir>')
      .description("export an unpacked image's rootfs (its top snapshot) into DIR, which must be empty")
      .option('--platform <platform>', 'platform (default: this host)')
      .option('--snapshotter <name>', 'snapshotter holding the rootfs (default: the namespace default)'),
  ).action(async (ref: string, dir: string, flags: RootfsFlags) => {
    await withDaemon('rootfs', flags, async (api) => {
      const platform = flags.platform === undefined ? defaultPlatform() : parsePlatform(flags.platform);
      // Ctrl-C stops the copy and still removes the view it copies from (and an overlay mounted for it),
      // which a killed process would leave behind.
      const stop = interruptSignal();
      try {
        const image = await findImage(api, ref);
        const snapshotter = await resolveSnapshotter(api, flags.snapshotter);
        await exportRootfs(api, image, dir, { platform, snapshotter, signal: stop.signal });
      } catch (err) {
        throw stop.signal.aborted ? stop.signal.reason : err;
      } finally {
        stop.dispose();
      }
    });
  });
}
