// A child process for the content crash test: writes a deterministic blob through the store, slowly, and
// reports its progress on stdout so the test can SIGKILL it at a chosen point.
//   node content-writer-child.ts <root> <ref> <seed> <size> <mode>
// mode: `write` (write everything, then wait), `pause:<offset>` (write up to offset, then wait),
//       `commit:<step>` (write everything, commit, and stop before that commit step).
import { setTimeout as sleep } from 'node:timers/promises';
import { ContentStore } from '../../src/content/store.ts';
import type { CommitStep } from '../../src/content/types.ts';
import { bytesAt, CHUNK, digestOfBlob } from './content-data.ts';

const [root, ref, seed, sizeArg, mode] = process.argv.slice(2);
if (!root || !ref || !seed || !sizeArg || !mode) {
  process.stderr.write('usage: content-writer-child.ts <root> <ref> <seed> <size> <mode>\n');
  process.exit(2);
}
const size = Number(sizeArg);
const say = (line: string): void => {
  process.stdout.write(`${line}\n`);
};
/** Waits until killed; a timer keeps the event loop alive. */
const hang = (): Promise<never> =>
  new Promise(() => {
    setInterval(() => {}, 1 << 30);
  });

const stopAt = mode.startsWith('commit:') ? (mode.slice('commit:'.length) as CommitStep) : undefined;
const pauseAt = mode.startsWith('pause:') ? Number(mode.slice('pause:'.length)) : size;

const store = await ContentStore.open(root, {
  hooks: {
    beforeCommitStep: async (step) => {
      if (step !== stopAt) return;
      say(`step ${step}`);
      await hang();
    },
  },
});
const expected = digestOfBlob(seed, size);
const w = await store.writer(ref, { expected, total: size });
say(`opened ${w.offset}`);
while (w.offset < pauseAt) {
  await w.write(bytesAt(seed, w.offset, Math.min(CHUNK, pauseAt - w.offset)));
  say(`offset ${w.offset}`);
  await sleep(2); // slow enough that a kill lands between or during writes
}
say('written');
if (stopAt === undefined) await hang();
await w.commit(size, expected);
say('committed');
