// Protobuf Timestamps ↔ the domain's times: from the metadata layer's nanoseconds, to Dates, and the zero
// Go time ctr sends in place of "no timestamp" (0001-01-01T00:00:00Z), which servers must treat as absent.
import { create } from '@bufbuild/protobuf';
import { type Timestamp, TimestampSchema, timestampDate } from '@bufbuild/protobuf/wkt';
import type { Nanos } from '../../metadata/db.ts';

/** Seconds of Go's zero time.Time relative to the Unix epoch. */
export const GO_ZERO_TIME_SECONDS = -62135596800n;

export function timestampFromNanos(ns: Nanos): Timestamp {
  let seconds = ns / 1_000_000_000n;
  let nanos = ns % 1_000_000_000n;
  if (nanos < 0n) {
    seconds -= 1n;
    nanos += 1_000_000_000n;
  }
  return create(TimestampSchema, { seconds, nanos: Number(nanos) });
}

/** The time a request carries, or undefined when it is unset or Go's zero time. */
export function requestTime(ts: Timestamp | undefined): Date | undefined {
  if (!ts) return undefined;
  if (ts.seconds === GO_ZERO_TIME_SECONDS && ts.nanos === 0) return undefined;
  return timestampDate(ts);
}

/** A Date for a timestamp a server sent, or undefined when it sent none. */
export function dateOf(ts: Timestamp | undefined): Date | undefined {
  return ts ? timestampDate(ts) : undefined;
}
