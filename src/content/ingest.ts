// The persisted state of one ingest: its metadata file (ref, start time, declared total and digest) and
// its data file, whose size is the resume offset. The metadata is replaced atomically; the data file is
// only ever appended to or truncated by the lock holder.
import { readFileSync } from 'node:fs';
import { stat } from 'node:fs/promises';
import { type Digest, isDigest } from '../oci/digest.ts';
import { isENOENT, writeFileAtomic } from './fs-util.ts';
import type { Layout } from './layout.ts';
import type { IngestStatus } from './types.ts';

export interface IngestMeta {
  ref: string;
  startedAt: string;
  total: number;
  expected?: Digest;
}

function parseMeta(text: string): IngestMeta | undefined {
  try {
    const v = JSON.parse(text) as Partial<IngestMeta>;
    if (typeof v.ref !== 'string' || typeof v.startedAt !== 'string') return undefined;
    if (!Number.isSafeInteger(v.total) || (v.total as number) < 0) return undefined;
    if (v.expected !== undefined && (typeof v.expected !== 'string' || !isDigest(v.expected))) {
      return undefined;
    }
    if (Number.isNaN(Date.parse(v.startedAt))) return undefined;
    return v as IngestMeta;
  } catch {
    return undefined;
  }
}

/** The metadata in an ingest directory, or undefined when there is none (or it is unreadable). */
export async function readMetaFile(path: string): Promise<IngestMeta | undefined> {
  try {
    return parseMeta(readFileSync(path, 'utf8'));
  } catch (err) {
    if (isENOENT(err)) return undefined;
    throw err;
  }
}

export async function writeMeta(layout: Layout, meta: IngestMeta, durable = true): Promise<void> {
  await writeFileAtomic(layout.ingestMeta(meta.ref), JSON.stringify(meta), layout.tmpDir, durable);
}

/** Status from what is on disk. The data file's size is the offset and its mtime the last update. */
export async function statusFromDisk(
  meta: IngestMeta,
  dataPath: string,
  metaPath: string,
): Promise<IngestStatus> {
  let offset = 0;
  let updatedAt: Date;
  try {
    const st = await stat(dataPath);
    offset = st.size;
    updatedAt = st.mtime;
  } catch (err) {
    if (!isENOENT(err)) throw err;
    updatedAt = (await stat(metaPath)).mtime;
  }
  return statusOf(meta, offset, updatedAt);
}

export function statusOf(meta: IngestMeta, offset: number, updatedAt: Date): IngestStatus {
  const s: IngestStatus = {
    ref: meta.ref,
    offset,
    total: meta.total,
    startedAt: new Date(meta.startedAt),
    updatedAt,
  };
  if (meta.expected !== undefined) s.expected = meta.expected;
  return s;
}
