// What goes on top of a base image: additions, each a list of layers with their diff_ids, a label for the
// history, optional env (for the GITPOD_ENV_* modifiers) and where each layer's bytes can be had, so the
// blob side can serve any layer of a composed image.
import type { Descriptor } from '../../oci/descriptor.ts';
import type { Digest } from '../../oci/digest.ts';

export type LayerOrigin =
  /** A layer of the base image: fetched from the base's repository. */
  | { kind: 'base' }
  /** A layer of an added image (static, ide, supervisor, ide layer): fetched from that image's repository. */
  | { kind: 'image'; ref: string }
  /** A static layer from a file of the facade's configuration: served from the blob cache by digest. */
  | { kind: 'static' }
  /** A remote content layer: the client is redirected to the URL. */
  | { kind: 'remote'; url: string }
  /** A direct content layer: served from these bytes. */
  | { kind: 'direct'; content: Uint8Array };

export interface AddedLayer {
  descriptor: Descriptor;
  diffId: Digest;
  origin: LayerOrigin;
}

export interface Addition {
  /** Names the source in the history entry of each of its layers, e.g. `ide eu.gcr.io/gitpod/ide:abc`. */
  source: string;
  layers: AddedLayer[];
  /** The added image's config env; only its GITPOD_ENV_* entries matter. */
  env?: readonly string[] | null;
}
