// The messages between the apply workers (apply-workers.ts) and a worker (apply-worker.ts).
import type { WireError } from '../thread-errors.ts';
import type { ApplyOptions, ApplyResult, SkipKind } from './apply-options.ts';

/** The options that can be copied to another thread as they are. */
export type CopyableOptions = Pick<
  ApplyOptions,
  'compression' | 'allowDevices' | 'chown' | 'uidMap' | 'gidMap' | 'maxEntries' | 'maxProcesses'
>;

/** What the caller asks for. */
export interface ApplyJob {
  type: 'apply';
  root: string;
  /** A descriptor of the caller's open layer file (threads share descriptors), or bytes to follow. */
  fd?: number;
  options: CopyableOptions;
  /** Overlay lowers, nearest first; whiteouts are made by the caller. */
  lowers?: readonly string[];
}

/** The copyable part of `opts`, without the keys it leaves unset. */
export function copyableOptions(opts: ApplyOptions): CopyableOptions {
  const out: CopyableOptions = {};
  for (const key of [
    'compression',
    'allowDevices',
    'chown',
    'uidMap',
    'gidMap',
    'maxEntries',
    'maxProcesses',
  ] as const) {
    if (opts[key] !== undefined) Object.assign(out, { [key]: opts[key] });
  }
  return out;
}

export type ToWorker =
  | ApplyJob
  | { type: 'data'; chunk: Uint8Array }
  | { type: 'end' }
  | { type: 'abort' }
  | { type: 'whiteout-done'; id: number; error?: WireError };

export type FromWorker =
  | { type: 'ack' }
  | { type: 'skip'; kind: SkipKind; name: string }
  | { type: 'whiteout'; id: number; path: string }
  | { type: 'done'; result: ApplyResult }
  | { type: 'failed'; error: WireError };
