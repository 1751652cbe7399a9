// The body of a Dockerfile analysis worker (dockerfile-analyzer.ts): dockerfile-ast's parse is one
// synchronous call of up to a few hundred milliseconds, which on the builder's event loop would hold up
// every other request. The analysis and its errors go back as plain data.
import { parentPort } from 'node:worker_threads';
import { type ErrorKind, errorKind, messageOf } from '../errors.ts';
import { analyzeDockerfile, type DockerfileAnalysis } from './dockerfile.ts';

export interface AnalysisJob {
  id: number;
  text: string;
  buildArgs: ReadonlyMap<string, string>;
}

export type AnalysisAnswer =
  | { id: number; analysis: DockerfileAnalysis }
  | { id: number; error: { kind?: ErrorKind; message: string } };

parentPort?.on('message', (job: AnalysisJob) => {
  let answer: AnalysisAnswer;
  try {
    answer = { id: job.id, analysis: analyzeDockerfile(job.text, job.buildArgs) };
  } catch (err) {
    const kind = errorKind(err);
    answer = { id: job.id, error: { ...(kind && { kind }), message: messageOf(err) } };
  }
  parentPort!.postMessage(answer);
});
