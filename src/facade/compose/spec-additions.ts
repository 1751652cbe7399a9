// The additions of one ImageSpec, in Gitpod's layer order: static layers (from the facade's config), then the
// images the spec names — ide_ref, supervisor_ref, each ide_layer_ref — then the content layers. The added
// images are resolved beforehand by the caller (network); this only arranges them.
import { type AddedImageRef, addedImageRefs, type ImageSpec } from '../spec.ts';
import { contentLayerAdditions } from './content-layers.ts';
import { type ImageView, imageAddition } from './image.ts';
import type { Addition } from './layers.ts';

/** `ide eu.gcr.io/gitpod/ide/code:abc`: the history label of an added image. */
export function sourceLabel(added: AddedImageRef): string {
  return `${added.role} ${added.ref}`;
}

/** A static image layer source (config `staticLayer` of type image) as an addition. */
export function staticImageAddition(view: ImageView, ref: string): Addition {
  return imageAddition(view, `static ${ref}`, ref);
}

export function specAdditions(
  spec: ImageSpec,
  viewOf: (added: AddedImageRef) => ImageView,
  staticAdditions: readonly Addition[] = [],
  options: { contentLayerUrls?: boolean } = {},
): Addition[] {
  return [
    ...staticAdditions,
    ...addedImageRefs(spec).map((added) => imageAddition(viewOf(added), sourceLabel(added), added.ref)),
    ...contentLayerAdditions(spec.contentLayers, { urls: options.contentLayerUrls }),
  ];
}
