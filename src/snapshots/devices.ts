// Whether this process may make device nodes.
import { readFileSync } from 'node:fs';

let cached: boolean | undefined;

/**
 * As containerd decides it: when running as root outside a user namespace (a namespace's root cannot
 * mknod, and containerd skips devices there). An unprivileged process skips them.
 */
export function canMakeDevices(): boolean {
  if (cached !== undefined) return cached;
  cached = false;
  if (process.getuid?.() !== 0) return cached;
  try {
    // The initial namespace maps every id to itself.
    cached = /^\s*0\s+0\s+4294967295\s*$/.test(readFileSync('/proc/self/uid_map', 'utf8'));
  } catch {
    cached = true;
  }
  return cached;
}
