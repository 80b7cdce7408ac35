// Runs one closed-loop load phase on several worker threads (one load generator saturates about one
// core near 7k ops/s, so a single thread would measure itself, not the server).
import { Worker } from 'node:worker_threads';
import { percentiles, type Percentiles } from './stats.js';
import type { Protocol } from './clients.js';
import type { FromThread, ThreadConfig, ToThread } from './load-thread.js';
import type { Workload } from './workload.js';

export interface LoadSpec {
  address: string;
  /** The API `address` serves: kvstore's public API or, for `--etcd`, etcd's KV. */
  protocol: Protocol;
  workload: Workload;
  concurrency: number;
  threads: number;
  keys: number;
  valueSize: number;
  warmupMs: number;
  durationMs: number;
  /** Upper bound on requests per thread, so a load loop always ends even if the clock misbehaves. */
  maxOpsPerThread: number;
  deadlineMs: number;
  /** Wait for calls in flight at the end before reading CPU (slow calls such as ListKeys). */
  drain?: boolean;
}

export interface LoadResult {
  ops: number;
  seconds: number;
  opsPerSec: number;
  errors: number;
  errorsByCode: Record<string, number>;
  lastError: string;
  notFound: number;
  latencyUs: Percentiles;
  /** CPU seconds of the load generator itself (this process, every thread) during the phase. */
  loadgenCpuSeconds: number;
}

export interface PhaseHooks {
  /** Called when counting starts and when it stops (to read server CPU at the same moments). */
  onStart?(): void;
  onStop?(): void;
  onProgress?(opsSoFar: number, errorsSoFar: number, elapsedMs: number): void;
}

const THREAD_URL = new URL('./load-thread.js', import.meta.url);

export async function runLoad(spec: LoadSpec, hooks: PhaseHooks = {}): Promise<LoadResult> {
  const threads = Math.max(1, Math.min(spec.threads, spec.concurrency));
  const workers: Worker[] = [];
  const done: Promise<Extract<FromThread, { type: 'done' }>>[] = [];
  const ready: Promise<void>[] = [];
  const progress = new Array<{ ops: number; errors: number }>(threads).fill({ ops: 0, errors: 0 });
  for (let t = 0; t < threads; t++) {
    // Spread the clients evenly: 64 over 3 threads is 22 + 21 + 21.
    const concurrency = Math.floor(spec.concurrency / threads) + (t < spec.concurrency % threads ? 1 : 0);
    const cfg: ThreadConfig = {
      address: spec.address,
      protocol: spec.protocol,
      concurrency,
      keys: spec.keys,
      valueSize: spec.valueSize,
      workload: spec.workload,
      maxOps: spec.maxOpsPerThread,
      deadlineMs: spec.deadlineMs,
      maxSamples: Math.min(spec.maxOpsPerThread, 4_000_000),
      waitForStart: spec.drain ?? false,
    };
    const w = new Worker(THREAD_URL, { workerData: cfg });
    workers.push(w);
    let onReady!: () => void;
    ready.push(new Promise((r) => (onReady = r)));
    done.push(
      new Promise((resolve, reject) => {
        w.on('message', (m: FromThread) => {
          if (m.type === 'ready') onReady();
          else if (m.type === 'progress') progress[t] = { ops: m.ops, errors: m.errors };
          else if (m.type === 'done') resolve(m);
        });
        w.on('error', reject);
        w.on('exit', (code) => reject(new Error(`load thread ${t} exited with code ${code} before reporting`)));
      }),
    );
  }
  const tell = (msg: ToThread): void => workers.forEach((w) => w.postMessage(msg));
  try {
    // A thread that dies before it is ready (server unreachable) must fail the phase, not hang it.
    await Promise.race([Promise.all(ready), Promise.all(done).then(() => Promise.reject(new Error('load threads ended before they were ready')))]);
    await sleep(spec.warmupMs);
    const cpu0 = process.cpuUsage();
    hooks.onStart?.();
    tell({ cmd: 'start' });
    const t0 = performance.now();
    const ticker = setInterval(() => {
      const ops = progress.reduce((n, p) => n + p.ops, 0);
      const errors = progress.reduce((n, p) => n + p.errors, 0);
      hooks.onProgress?.(ops, errors, performance.now() - t0);
    }, 1000);
    await sleep(spec.durationMs);
    tell({ cmd: 'stop' });
    if (spec.drain) await Promise.all(done);
    const seconds = (performance.now() - t0) / 1000;
    hooks.onStop?.();
    const cpu = process.cpuUsage(cpu0);
    clearInterval(ticker);
    const results = await Promise.all(done);
    const total = results.reduce((n, r) => n + r.samples.length, 0);
    const all = new Float64Array(total);
    let at = 0;
    for (const r of results) {
      all.set(r.samples, at);
      at += r.samples.length;
    }
    const errorsByCode: Record<string, number> = {};
    for (const r of results) for (const [k, v] of Object.entries(r.errors)) errorsByCode[k] = (errorsByCode[k] ?? 0) + v;
    const ops = results.reduce((n, r) => n + r.ops, 0);
    return {
      ops,
      seconds,
      opsPerSec: ops / seconds,
      errors: Object.values(errorsByCode).reduce((a, b) => a + b, 0),
      errorsByCode,
      lastError: results.map((r) => r.lastError).find((e) => e) ?? '',
      notFound: results.reduce((n, r) => n + r.notFound, 0),
      latencyUs: percentiles(all),
      loadgenCpuSeconds: (cpu.user + cpu.system) / 1e6,
    };
  } finally {
    await Promise.all(workers.map((w) => w.terminate()));
  }
}

export const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));
