// The labels containerd's garbage collector reads, in a module of their own: code that only writes them
// (the hosted registry, the facade's cache) does not load the metadata database with them.

/** Content or a snapshot with this label is a root: kept whatever references it. */
export const LABEL_GC_ROOT = 'containerd.io/gc.root';
/** A resource or lease with this label (an RFC 3339 time) is held until that time. */
export const LABEL_GC_EXPIRE = 'containerd.io/gc.expire';
/** A lease with this label holds only its direct resources, not what they reference. */
export const LABEL_GC_FLAT = 'containerd.io/gc.flat';
