// What a benchmark reads of another process from /proc: memory figures and CPU time.
import { readFileSync } from 'node:fs';
import { readFile, writeFile } from 'node:fs/promises';
import { setTimeout as sleep } from 'node:timers/promises';

/** A `kB` field of /proc/PID/status (VmRSS, VmHWM, …), in bytes. */
export async function statusField(pid: number, field: string): Promise<number> {
  const text = await readFile(`/proc/${pid}/status`, 'utf8');
  const m = new RegExp(`^${field}:\\s+(\\d+) kB`, 'm').exec(text);
  if (!m) throw new Error(`no ${field} in /proc/${pid}/status`);
  return Number(m[1]) * 1024;
}

/** User plus system CPU seconds the process has used so far (its own threads, not its children). */
export async function cpuSeconds(pid: number): Promise<number> {
  return statCpuSeconds(await readFile(`/proc/${pid}/stat`, 'utf8'));
}

/** cpuSeconds, read at once (for a sample taken inside an event handler). */
export function cpuSecondsNow(pid: number): number {
  return statCpuSeconds(readFileSync(`/proc/${pid}/stat`, 'utf8'));
}

function statCpuSeconds(stat: string): number {
  // Fields after the command name (which may hold spaces) start at the last ')'.
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  // utime and stime are fields 14 and 15 of the whole line, in clock ticks (100 per second on Linux).
  return (Number(fields[11]) + Number(fields[12])) / 100;
}

/**
 * CPU seconds the whole machine has been busy so far, all cores added up (every process and the kernel:
 * /proc/stat's first line without idle and iowait).
 */
export function machineCpuSecondsNow(): number {
  const line = readFileSync('/proc/stat', 'utf8').split('\n', 1)[0]!;
  const [user, nice, system, , , irq, softirq, steal] = line.trim().split(/\s+/).slice(1).map(Number);
  return ((user ?? 0) + (nice ?? 0) + (system ?? 0) + (irq ?? 0) + (softirq ?? 0) + (steal ?? 0)) / 100;
}

/**
 * Samples a process's peak RSS while `run` runs: the kernel's high-water mark (reset first) and VmRSS
 * polled every 50 ms, whichever is higher.
 */
export async function peakRss<T>(pid: number, run: () => Promise<T>): Promise<{ result: T; peak: number }> {
  await writeFile(`/proc/${pid}/clear_refs`, '5');
  let sampling = true;
  let polled = 0;
  const sampler = (async () => {
    while (sampling) {
      polled = Math.max(polled, await statusField(pid, 'VmRSS'));
      await sleep(50);
    }
  })();
  try {
    const result = await run();
    return { result, peak: Math.max(polled, await statusField(pid, 'VmHWM')) };
  } finally {
    sampling = false;
    await sampler;
  }
}

export const mib = (n: number): string => (n / 2 ** 20).toFixed(1);
