// Putting bytes into a daemon's content store through the real Content.Write API, for tests that then
// apply them as layers.
import * as grpc from '@grpc/grpc-js';
import { Content, WriteAction } from '../../src/api/gen/containerd/services/content/v1/content_pb.ts';
import { callBidi } from '../../src/api/grpc/client.ts';
import { digestOf } from '../../src/oci/digest.ts';

let n = 0;

/** Writes and commits `bytes` in one message; the same bytes already there are fine. Returns a descriptor. */
export async function putContent(
  client: grpc.Client,
  callOpts: { metadata: grpc.Metadata },
  bytes: Buffer,
  mediaType: string,
): Promise<{ mediaType: string; digest: string; size: bigint }> {
  const digest = digestOf(bytes);
  const call = callBidi(client, Content.method.write, callOpts);
  await call.send({
    action: WriteAction.COMMIT,
    ref: `put-${process.pid}-${n++}`,
    total: BigInt(bytes.length),
    expected: digest,
    data: bytes,
  });
  call.end();
  try {
    for await (const _ of call.responses) {
      // The stream ends after the commit.
    }
  } catch (err) {
    if ((err as grpc.ServiceError).code !== grpc.status.ALREADY_EXISTS) throw err;
  }
  return { mediaType, digest, size: BigInt(bytes.length) };
}
