// Server cost read from the kernel, not from the servers themselves: CPU seconds (utime + stime of
// /proc/<pid>/stat, all threads), resident memory (VmRSS, VmHWM of /proc/<pid>/status) and context
// switches per thread (/proc/<pid>/task/<tid>/status). Linux only.
import { readFileSync, readdirSync } from 'node:fs';
import { execFileSync } from 'node:child_process';

let ticksPerSecond = 100;
try {
  ticksPerSecond = Number(execFileSync('getconf', ['CLK_TCK'], { encoding: 'utf8' }).trim()) || 100;
} catch {
  // getconf missing: 100 Hz is the Linux default for USER_HZ.
}

/** CPU seconds the process has used so far (user + system, every thread), or NaN if it is gone. */
export function cpuSeconds(pid: number): number {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    // The command name (field 2) may contain spaces and parentheses: count fields after the last ')'.
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    return (Number(fields[11]) + Number(fields[12])) / ticksPerSecond;
  } catch {
    return Number.NaN;
  }
}

/** A number field of a /proc status text (`VmHWM:  1234 kB`, `voluntary_ctxt_switches: 56`), or NaN. */
function fieldOf(status: string, field: string): number {
  const m = new RegExp(`^${field}:\\s+(\\d+)`, 'm').exec(status);
  return m ? Number(m[1]) : Number.NaN;
}

/** fieldOf a /proc status file, or NaN if it cannot be read (the process is gone). */
function statusField(file: string, field: string): number {
  try {
    return fieldOf(readFileSync(file, 'utf8'), field);
  } catch {
    return Number.NaN;
  }
}

/** Peak resident set size since the process started, in MiB. */
export const peakRssMiB = (pid: number): number => statusField(`/proc/${pid}/status`, 'VmHWM') / 1024;
/** Current resident set size, in MiB. */
export const rssMiB = (pid: number): number => statusField(`/proc/${pid}/status`, 'VmRSS') / 1024;

export interface Switches {
  /** Times a thread went to sleep and was woken (voluntary context switches). */
  woken: number;
  /** Times the scheduler took the core away from a thread that could still run (involuntary). */
  preempted: number;
}

/** Each thread's context switches since it started (/proc/<pid>/task/<tid>/status); empty if the process is gone. */
export function threadSwitches(pid: number): Map<string, Switches> {
  const threads = new Map<string, Switches>();
  let tids: string[];
  try {
    tids = readdirSync(`/proc/${pid}/task`);
  } catch {
    return threads;
  }
  for (const tid of tids) {
    let status: string;
    try {
      status = readFileSync(`/proc/${pid}/task/${tid}/status`, 'utf8');
    } catch {
      continue; // the thread ended meanwhile
    }
    threads.set(tid, { woken: fieldOf(status, 'voluntary_ctxt_switches') || 0, preempted: fieldOf(status, 'nonvoluntary_ctxt_switches') || 0 });
  }
  return threads;
}

/**
 * Switches between two readings of threadSwitches, thread by thread: a thread that ended in between
 * (a piscina thread retiring after a backup) would otherwise take its whole lifetime's count out of
 * the sum and make the difference too small, even negative. Threads started in between count from 0.
 * NaN when the process was gone at either reading. On a small, busy machine `preempted` is where a
 * process loses its warm caches to the others.
 */
export function switchesBetween(before: Map<string, Switches>, after: Map<string, Switches>): Switches {
  if (before.size === 0 || after.size === 0) return { woken: Number.NaN, preempted: Number.NaN };
  let woken = 0;
  let preempted = 0;
  for (const [tid, a] of after) {
    const b = before.get(tid);
    woken += a.woken - (b?.woken ?? 0);
    preempted += a.preempted - (b?.preempted ?? 0);
  }
  return { woken, preempted };
}

/** What the bench reads of a server process at both ends of a measured window. */
export interface CostReading {
  cpuSeconds: number;
  threads: Map<string, Switches>;
}

export const readCost = (pid: number): CostReading => ({ cpuSeconds: cpuSeconds(pid), threads: threadSwitches(pid) });

/** CPU seconds and context switches between two readings of one process. */
export function costBetween(before: CostReading, after: CostReading): { cpuSeconds: number } & Switches {
  return { cpuSeconds: after.cpuSeconds - before.cpuSeconds, ...switchesBetween(before.threads, after.threads) };
}
