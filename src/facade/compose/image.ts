// An image as the composer sees it: its parsed manifest and config, no bytes, no network. Added images
// become additions here, with Gitpod's skip-n label honoured.
import { invalidArgument } from '../../errors.ts';
import type { Descriptor } from '../../oci/descriptor.ts';
import { type Digest, isDigest } from '../../oci/digest.ts';
import type { ImageConfig, ImageManifest } from '../../oci/manifest.ts';
import type { Addition, LayerOrigin } from './layers.ts';

export interface ImageView {
  manifest: ImageManifest;
  config: ImageConfig;
  /** The manifest's media type as parseManifest settled it (body, else Content-Type); else read from the manifest. */
  mediaType?: string;
}

/** Label on an added image's config: drop its first N layers (e.g. those of the image it was built FROM). */
export const SKIP_N_LABEL = 'skip-n.registry-facade.gitpod.io';

const UINT16_MAX = 0xffff;

/**
 * The skip-n label's value: an unsigned 16-bit decimal, 0 when absent. Anything else is an error, worded as
 * Gitpod words it (Go's strconv.ParseUint), prefixed with `where`.
 */
export function skipNOf(config: ImageConfig, where: string): number {
  const v = config.config?.Labels?.[SKIP_N_LABEL];
  if (v === undefined) return 0;
  if (!/^[0-9]+$/.test(v)) {
    throw invalidArgument(
      `${where}: skipN layer label: strconv.ParseUint: parsing ${JSON.stringify(v)}: invalid syntax`,
    );
  }
  const n = Number(v);
  if (n > UINT16_MAX) {
    throw invalidArgument(
      `${where}: skipN layer label: strconv.ParseUint: parsing ${JSON.stringify(v)}: value out of range`,
    );
  }
  return n;
}

/** The image's layers paired with their diff_ids; the two lists must have the same length. */
export function layersWithDiffIds(
  view: ImageView,
  where: string,
): { descriptor: Descriptor; diffId: Digest }[] {
  const layers = view.manifest.layers;
  if (!Array.isArray(layers)) throw invalidArgument(`${where}: manifest has no layers list`);
  const diffIds: unknown = view.config.rootfs?.diff_ids;
  if (!Array.isArray(diffIds)) throw invalidArgument(`${where}: config has no rootfs.diff_ids`);
  if (diffIds.length !== layers.length) {
    throw invalidArgument(
      `${where}: manifest lists ${layers.length} layers but the config has ${diffIds.length} diff_ids`,
    );
  }
  return layers.map((descriptor, i) => {
    const diffId: unknown = diffIds[i];
    if (typeof diffId !== 'string' || !isDigest(diffId)) {
      throw invalidArgument(
        `${where}: rootfs.diff_ids[${i}] is not a valid digest: ${JSON.stringify(diffId)}`,
      );
    }
    return { descriptor, diffId };
  });
}

/**
 * An added image as an addition: its layers after the first skip-n, each with the diff_id of the same index,
 * and its env for the GITPOD_ENV_* modifiers. N at or above the layer count leaves no layer (not an error).
 */
export function imageAddition(view: ImageView, source: string, ref: string): Addition {
  const where = `image ${ref}`;
  const skip = skipNOf(view.config, where);
  const origin: LayerOrigin = { kind: 'image', ref };
  return {
    source,
    layers: layersWithDiffIds(view, where)
      .slice(skip)
      .map((l) => ({ ...l, origin })),
    env: view.config.config?.Env ?? null,
  };
}
