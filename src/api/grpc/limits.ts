/** Largest gRPC message either way: containerd's client and server default (16 MiB), and ours. */
export const MAX_MESSAGE_BYTES = 16 << 20;
