// Server cost read from the kernel, not from the servers themselves: CPU seconds (utime + stime of
// /proc/<pid>/stat, all threads) and peak resident memory (VmHWM of /proc/<pid>/status). Linux only.
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

/** A number field of a /proc status file (`VmHWM:  1234 kB`, `voluntary_ctxt_switches: 56`), or NaN. */
function statusField(file: string, field: string): number {
  try {
    const m = new RegExp(`^${field}:\\s+(\\d+)`, 'm').exec(readFileSync(file, 'utf8'));
    return m ? Number(m[1]) : Number.NaN;
  } catch {
    return Number.NaN;
  }
}

/** Peak resident set size since the process started, in MiB. */
export const peakRssMiB = (pid: number): number => statusField(`/proc/${pid}/status`, 'VmHWM') / 1024;
/** Current resident set size, in MiB. */
export const rssMiB = (pid: number): number => statusField(`/proc/${pid}/status`, 'VmRSS') / 1024;

/**
 * How many times the process has gone to sleep and been woken since it started: voluntary context
 * switches summed over its threads (/proc/<pid>/task/<tid>/status), or NaN if it is gone.
 */
export function wakeups(pid: number): number {
  try {
    return readdirSync(`/proc/${pid}/task`).reduce((n, tid) => n + (statusField(`/proc/${pid}/task/${tid}/status`, 'voluntary_ctxt_switches') || 0), 0);
  } catch {
    return Number.NaN;
  }
}
