// Field paths each object exposes to filters, as containerd's metadata adaptors define them. Everything
// not listed is absent.
import type { Adaptor } from './filter.ts';

export interface ImageFields {
  name: string;
  target: { mediaType: string; digest: string; annotations?: Record<string, string> };
  labels?: Record<string, string>;
}

export interface ContentFields {
  digest: string;
  labels?: Record<string, string>;
}

export interface IngestFields {
  ref: string;
}

export interface LeaseFields {
  id: string;
  labels?: Record<string, string>;
}

/** `labels.a.b` looks up key `a.b`; an empty or missing map means absent. */
function mapField(map: Record<string, string> | undefined, rest: string[]): string | undefined {
  if (!map || rest.length === 0) return undefined;
  const key = rest.join('.');
  return Object.hasOwn(map, key) ? map[key] : undefined;
}

const nonEmpty = (s: string): string | undefined => (s.length > 0 ? s : undefined);

/** name, target.digest, target.mediatype, labels.*, annotations.* (the target descriptor's annotations). */
export function imageAdaptor(img: ImageFields): Adaptor {
  return {
    field(path) {
      switch (path[0]) {
        case 'name':
          return nonEmpty(img.name);
        case 'target':
          if (path.length < 2) return undefined;
          if (path[1] === 'digest') return nonEmpty(img.target.digest);
          if (path[1] === 'mediatype') return nonEmpty(img.target.mediaType);
          return undefined;
        case 'labels':
          return mapField(img.labels, path.slice(1));
        case 'annotations':
          return mapField(img.target.annotations, path.slice(1));
        default:
          return undefined;
      }
    },
  };
}

/** digest (always present) and labels.*; containerd does not expose size. */
export function contentAdaptor(info: ContentFields): Adaptor {
  return {
    field(path) {
      if (path[0] === 'digest') return info.digest;
      if (path[0] === 'labels') return mapField(info.labels, path.slice(1));
      return undefined;
    },
  };
}

/** ref (always present). */
export function ingestAdaptor(status: IngestFields): Adaptor {
  return { field: (path) => (path[0] === 'ref' ? status.ref : undefined) };
}

/** id and labels.*. */
export function leaseAdaptor(lease: LeaseFields): Adaptor {
  return {
    field(path) {
      if (path[0] === 'id') return nonEmpty(lease.id);
      if (path[0] === 'labels') return mapField(lease.labels, path.slice(1));
      return undefined;
    },
  };
}
