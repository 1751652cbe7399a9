// `strata images ls|rm|label|check`: ctr's image commands, through the daemon's gRPC API.
import type { Command } from 'commander';
import type { Labels } from '../client/daemon-api.ts';
import { checkImage, imageManifest, imagePlatforms, imageSize, isUnpacked } from '../client/pull/inspect.ts';
import { findImage, resolveSnapshotter } from '../client/pull/pull.ts';
import { isNotFound, messageOf } from '../errors.ts';
import type { Platform } from '../oci/descriptor.ts';
import { defaultPlatform, formatPlatform, parsePlatform } from '../oci/platform.ts';
import { type DaemonFlags, withDaemon, withDaemonFlags } from './daemon-flags.ts';
import { formatBytes } from './progress.ts';

/** Columns padded to their widest cell, one space apart (ctr's tabwriter layout). */
export function table(rows: readonly (readonly string[])[]): string {
  const widths = rows[0]?.map((_, i) => Math.max(...rows.map((r) => r[i]?.length ?? 0))) ?? [];
  return rows
    .map((r) => r.map((c, i) => (i === r.length - 1 ? c : c.padEnd(widths[i]! + 1))).join(''))
    .join('\n')
    .concat(rows.length > 0 ? '\n' : '');
}

export function formatLabels(labels: Labels): string {
  const keys = Object.keys(labels).sort();
  return keys.length === 0 ? '-' : keys.map((k) => `${k}=${labels[k]}`).join(',');
}

const warn = (s: string) => process.stderr.write(`${s}\n`);

interface LsFlags extends DaemonFlags {
  quiet?: boolean;
  platform?: string;
}
interface RmFlags extends DaemonFlags {
  sync?: boolean;
}
interface LabelFlags extends DaemonFlags {
  replaceAll?: boolean;
}
interface CheckFlags extends DaemonFlags {
  quiet?: boolean;
  snapshotter?: string;
  platform?: string;
}

const platformOf = (flag: string | undefined): Platform =>
  flag === undefined ? defaultPlatform() : parsePlatform(flag);

export function registerImages(program: Command): void {
  const images = program.command('images').alias('image').description('manage images in the daemon');

  withDaemonFlags(
    images
      .command('ls [filters...]')
      .alias('list')
      .description('list images (filters as ctr takes them, ORed)')
      .option('-q, --quiet', 'print only the names')
      .option('--platform <platform>', 'platform for the SIZE column (default: this host)'),
  ).action(async (filters: string[], flags: LsFlags) => {
    await withDaemon('images ls', flags, async (api) => {
      const platform = platformOf(flags.platform);
      const list = await api.listImages(filters);
      if (flags.quiet) {
        for (const img of list) process.stdout.write(`${img.name}\n`);
        return;
      }
      const rows = [['REF', 'TYPE', 'DIGEST', 'SIZE', 'PLATFORMS', 'LABELS']];
      for (const img of list) {
        let size = '-';
        let platforms = '-';
        try {
          size = formatBytes(imageSize(await imageManifest(api, img.target, platform)));
        } catch (err) {
          warn(`failed calculating size for image ${img.name}: ${messageOf(err)}`);
        }
        try {
          platforms = (await imagePlatforms(api, img.target)).map(formatPlatform).join(',') || '-';
        } catch (err) {
          warn(`failed resolving platform for image ${img.name}: ${messageOf(err)}`);
        }
        rows.push([
          img.name,
          img.target.mediaType,
          img.target.digest,
          size,
          platforms,
          formatLabels(img.labels),
        ]);
      }
      process.stdout.write(table(rows));
    });
  });

  withDaemonFlags(
    images
      .command('rm <refs...>')
      .aliases(['remove', 'del', 'delete'])
      .description('remove images (missing ones are warned about, not failed on)')
      .option('--sync', 'wait for garbage collection after the last removal'),
  ).action(async (refs: string[], flags: RmFlags) => {
    await withDaemon('images rm', flags, async (api) => {
      let first: unknown;
      for (const [i, ref] of refs.entries()) {
        try {
          await api.deleteImage(ref, flags.sync === true && i === refs.length - 1);
          process.stdout.write(`${ref}\n`);
        } catch (err) {
          if (isNotFound(err)) warn(`${ref}: image not found`);
          else {
            warn(`${ref}: ${messageOf(err)}`);
            first ??= err;
          }
        }
      }
      if (first) throw first;
    });
  });

  withDaemonFlags(
    images
      .command('label <ref> [labels...]')
      .description('set labels (k=v; k= removes k; k alone means k=true), or show them')
      .option('-r, --replace-all', 'replace all labels with the ones given'),
  ).action(async (ref: string, pairs: string[], flags: LabelFlags) => {
    await withDaemon('images label', flags, async (api) => {
      const img = await findImage(api, ref);
      const labels: Labels = {};
      for (const pair of pairs) {
        const eq = pair.indexOf('=');
        if (eq < 0) labels[pair] = 'true';
        else labels[pair.slice(0, eq)] = pair.slice(eq + 1);
      }
      let result = img;
      if (pairs.length > 0 || flags.replaceAll) {
        const set = Object.fromEntries(Object.entries(labels).filter(([, v]) => v !== ''));
        const paths = flags.replaceAll ? ['labels'] : Object.keys(labels).map((k) => `labels.${k}`);
        result = await api.updateImage({ ...img, labels: set }, paths);
      }
      process.stdout.write(`${formatLabels(result.labels)}\n`);
    });
  });

  withDaemonFlags(
    images
      .command('check [filters...]')
      .description('check that images are complete (all blobs present) and unpacked')
      .option('-q, --quiet', 'print only the names of complete, unpacked images')
      .option('--snapshotter <name>', 'snapshotter to check (default: the namespace default, else overlayfs)')
      .option('--platform <platform>', 'platform to check (default: this host)'),
  ).action(async (filters: string[], flags: CheckFlags) => {
    await withDaemon('images check', flags, async (api) => {
      const platform = platformOf(flags.platform);
      const snapshotter = await resolveSnapshotter(api, flags.snapshotter);
      const rows = [['REF', 'TYPE', 'DIGEST', 'STATUS', 'SIZE', 'UNPACKED']];
      let failure: unknown;
      for (const img of await api.listImages(filters)) {
        const check = await checkImage(api, img.target, platform);
        let unpacked = false;
        try {
          unpacked =
            check.status !== 'unavailable' && (await isUnpacked(api, img.target, platform, snapshotter));
        } catch (err) {
          failure ??= err;
        }
        if (flags.quiet) {
          if (check.status === 'complete' && unpacked) process.stdout.write(`${img.name}\n`);
          continue;
        }
        const status = `${check.status} (${check.available}/${check.required ?? '?'})`;
        const size = `${formatBytes(check.availableBytes)}/${formatBytes(check.requiredBytes)}`;
        rows.push([img.name, img.target.mediaType, img.target.digest, status, size, String(unpacked)]);
      }
      if (!flags.quiet) process.stdout.write(table(rows));
      if (failure) throw failure;
    });
  });
}
