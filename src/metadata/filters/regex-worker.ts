// The body of the regex worker (regex-runner.ts): tests texts against one pattern per message, so that
// a costly `~=` filter runs beside the daemon's event loop instead of on it.
import { parentPort } from 'node:worker_threads';
import { compileRe2, type Re2 } from './re2.ts';

export interface RegexJob {
  id: number;
  pattern: string;
  texts: string[];
}

export interface RegexAnswer {
  id: number;
  /** 1 where the text matches; all 0 for a pattern that does not compile (containerd: matches nothing). */
  matches: Uint8Array;
  invalid: boolean;
}

/** Compiled patterns, most recently used last; a listing's chunks reuse them (compiling costs ms). */
const compiled = new Map<string, Re2 | null>();
const MAX_COMPILED = 64;

function compiledFor(pattern: string): Re2 | null {
  let re = compiled.get(pattern);
  if (re === undefined) {
    try {
      re = compileRe2(pattern);
    } catch {
      re = null;
    }
    if (compiled.size >= MAX_COMPILED) compiled.delete(compiled.keys().next().value!);
  } else {
    compiled.delete(pattern);
  }
  compiled.set(pattern, re);
  return re;
}

parentPort?.on('message', (job: RegexJob) => {
  const re = compiledFor(job.pattern);
  const matches = new Uint8Array(job.texts.length);
  if (re) for (let i = 0; i < job.texts.length; i++) matches[i] = re.test(job.texts[i]!) ? 1 : 0;
  const answer: RegexAnswer = { id: job.id, matches, invalid: re === null };
  parentPort!.postMessage(answer, [matches.buffer]);
});
