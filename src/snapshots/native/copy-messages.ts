// The messages between the copy runner (copy-runner.ts) and the copy worker (copy-worker.ts).
import type { WireError } from '../thread-errors.ts';
import type { CopyTreeResult } from './tree-copier.ts';

export interface CopyJob {
  id: number;
  src: string;
  dst: string;
  chown: boolean;
  /** One Int32: set to 1 when the caller aborts. */
  abort: SharedArrayBuffer;
}

export type CopyAnswer = { id: number; result: CopyTreeResult } | { id: number; error: WireError };
