// The body of the htpasswd checker's worker (htpasswd.ts): bcryptjs is plain JavaScript, so a check on the
// facade's event loop would hold up every other request for the check's whole cost.
import { parentPort } from 'node:worker_threads';
import bcrypt from 'bcryptjs';

export interface BcryptJob {
  id: number;
  password: string;
  hash: string;
}

export type BcryptAnswer = { id: number; ok: boolean } | { id: number; error: string };

parentPort?.on('message', (job: BcryptJob) => {
  let answer: BcryptAnswer;
  try {
    answer = { id: job.id, ok: bcrypt.compareSync(job.password, job.hash) };
  } catch (err) {
    answer = { id: job.id, error: err instanceof Error ? err.message : String(err) };
  }
  parentPort!.postMessage(answer);
});
