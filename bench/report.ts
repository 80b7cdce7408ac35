// The report: one JSON document for machines and the same numbers as Markdown tables for people.
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import type { LoadResult } from './load.js';

export interface ProcessCost {
  name: string;
  pid: number;
  cpuSeconds: number;
  cpuUsPerOp: number;
  /** Times the process went to sleep and was woken, per op: on a VM each costs far more than a syscall. */
  wakeupsPerOp: number;
  /** Times the scheduler took the core away from the process, per op: each costs it its warm caches. */
  preemptionsPerOp: number;
  peakRssMiB: number;
  rssMiB: number;
}

export interface Phase {
  /** gateway | direct | etcd | bare, plus a variant (e.g. "gateway/metrics-off", "direct/sync-full"). */
  target: string;
  workload: string;
  concurrency: number;
  keys: number;
  loadAvg1m: number;
  /** Why a phase was run again (e.g. as the reference next to a variant). */
  note?: string;
  result: LoadResult;
  servers: ProcessCost[];
  serverCpuUsPerOp: number;
  serverWakeupsPerOp: number;
  loadgenCpuUsPerOp: number;
  extra?: Record<string, number | string | boolean>;
}

/** What a server process costs while no request arrives: its timers and background work. */
export interface IdleCost {
  target: string;
  name: string;
  pid: number;
  seconds: number;
  cpuMsPerSecond: number;
  wakeupsPerSecond: number;
}

export interface Comparison {
  variant: string;
  workload: string;
  concurrency: number;
  opsRatio: number;
  cpuPerOpRatio: number;
  p99Ratio: number;
  /** Set when the ratios are the median of this many rounds. */
  rounds?: number;
  /**
   * Failed requests (NOT_FOUND aside) in the phases compared, over every round. Failures count as ops
   * and in the latencies, so a ratio over them says little about the store: a Target is not met then.
   */
  errors: number;
}

export const median = (xs: number[]): number => {
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2;
};

/** Each ratio is the median over the rounds, taken separately. */
export function medianComparison(each: Comparison[]): Comparison {
  if (each.length === 1) return each[0];
  return {
    ...each[0],
    opsRatio: median(each.map((c) => c.opsRatio)),
    cpuPerOpRatio: median(each.map((c) => c.cpuPerOpRatio)),
    p99Ratio: median(each.map((c) => c.p99Ratio)),
    rounds: each.length,
    errors: each.reduce((n, c) => n + c.errors, 0),
  };
}

export interface Target {
  name: string;
  measured: number;
  limit: string;
  met: boolean;
  /** Failed requests in the phases behind `measured` (then `met` is false whatever the ratio). */
  errors?: number;
}

export interface Report {
  meta: Record<string, unknown>;
  phases: Phase[];
  idle: IdleCost[];
  comparisons: Comparison[];
  targets: Target[];
}

const f = (n: number, digits = 0): string => (Number.isFinite(n) ? n.toFixed(digits) : '-');
/** ops/s with decimals when small: a 2 s ListKeys is 0.47 calls a second, which toFixed(0) printed as 0. */
export const rate = (n: number): string => f(n, Math.abs(n) < 10 ? 2 : 0);
const fmtLoad = (v: unknown): string => (Array.isArray(v) ? v.map((x: number) => x.toFixed(1)).join(' / ') : '-');
const ms = (us: number): string => (us / 1000).toFixed(2);

export function toMarkdown(r: Report): string {
  const lines: string[] = [];
  lines.push(`# kvstore benchmark ${String(r.meta.date)}`, '');
  lines.push(`\`${String(r.meta.command)}\``, '');
  lines.push(`Machine: ${String(r.meta.cpus)} CPUs (${String(r.meta.cpuModel)}), Node ${String(r.meta.node)}. ` +
    `Load: ${String(r.meta.threads)} load threads, ${String(r.meta.durationS)} s per phase after ${String(r.meta.warmupS)} s warm-up, ` +
    `${String(r.meta.keys)} keys, ${String(r.meta.valueSize)}-byte values, ${String(r.meta.workers)} workers behind the gateway. ` +
    `Load average (1/5/15 min) at start ${fmtLoad(r.meta.loadAvgStart)}, at end ${fmtLoad(r.meta.loadAvgEnd)}: on a shared machine, read the ratios and CPU/op, not the absolute rates.`, '');
  if (typeof r.meta.etcd === 'string') lines.push(`Compared with ${r.meta.etcd}`, '');
  if (typeof r.meta.bare === 'string') lines.push(`The floor ("bare"): ${r.meta.bare}`, '');
  lines.push('## Phases', '');
  lines.push('| target | workload | conc | keys | ops/s | p50 ms | p90 ms | p99 ms | p99.9 ms | errors | server CPU µs/op | server wake-ups/op | loadgen CPU µs/op | load avg | per process: CPU µs/op, wake-ups/op, preempted/op, peak RSS MiB |');
  lines.push('|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|');
  for (const p of r.phases) {
    const l = p.result.latencyUs;
    const per = p.servers.map((s) => `${s.name} ${f(s.cpuUsPerOp, 1)}, ${f(s.wakeupsPerOp, 2)}, ${f(s.preemptionsPerOp, 2)}, ${f(s.peakRssMiB)}`).join('; ');
    lines.push(`| ${p.target}${p.note ? ` (${p.note})` : ''} | ${p.workload} | ${p.concurrency} | ${p.keys} | ${rate(p.result.opsPerSec)} | ${ms(l.p50)} | ${ms(l.p90)} | ${ms(l.p99)} | ${ms(l.p999)} | ${p.result.errors} | ${f(p.serverCpuUsPerOp, 1)} | ${f(p.serverWakeupsPerOp, 2)} | ${f(p.loadgenCpuUsPerOp, 1)} | ${f(p.loadAvg1m, 1)} | ${per} |`);
  }
  if (r.idle.length > 0) {
    lines.push('', `## Idle (${f(r.idle[0].seconds)} s with no requests, after the preload)`, '');
    lines.push('| target | process | CPU ms per second | wake-ups per second |', '|---|---|---:|---:|');
    for (const i of r.idle) lines.push(`| ${i.target} | ${i.name} | ${f(i.cpuMsPerSecond, 2)} | ${f(i.wakeupsPerSecond)} |`);
  }
  const extras = r.phases.filter((p) => p.extra);
  if (extras.length > 0) {
    lines.push('', '## Backup and listing', '');
    for (const p of extras) {
      lines.push(`- ${p.target} ${p.workload} (${p.keys} keys): ${Object.entries(p.extra!).map(([k, v]) => `${k} ${typeof v === 'number' ? f(v, 2) : String(v)}`).join(', ')}`);
    }
  }
  if (r.comparisons.length > 0) {
    lines.push('', '## Ratios (first target ÷ second, same run)', '');
    lines.push('| comparison | workload | conc | ops/s ratio | server CPU/op ratio | p99 ratio | errors |', '|---|---|---:|---:|---:|---:|---:|');
    for (const c of r.comparisons) {
      lines.push(`| ${c.variant}${c.rounds ? ` (median of ${c.rounds} rounds)` : ''} | ${c.workload} | ${c.concurrency} | ${f(c.opsRatio, 2)} | ${f(c.cpuPerOpRatio, 2)} | ${f(c.p99Ratio, 2)} | ${c.errors} |`);
    }
  }
  if (r.targets.length > 0) {
    lines.push('', '## Targets (issue 8)', '', '| target | measured | limit | met |', '|---|---:|---|---|');
    for (const t of r.targets) lines.push(`| ${t.name} | ${f(t.measured, 2)} | ${t.limit} | ${t.met ? 'yes' : t.errors ? `NO: ${t.errors} requests failed` : 'NO'} |`);
  }
  return lines.join('\n') + '\n';
}

export function writeReport(dir: string, r: Report): { json: string; md: string } {
  mkdirSync(dir, { recursive: true });
  const stamp = String(r.meta.date).replace(/[-:]/g, '').replace(/\.\d+Z$/, 'Z');
  const json = join(dir, `bench-${stamp}.json`);
  const md = join(dir, `bench-${stamp}.md`);
  writeFileSync(json, JSON.stringify(r, null, 2) + '\n');
  writeFileSync(md, toMarkdown(r));
  return { json, md };
}
