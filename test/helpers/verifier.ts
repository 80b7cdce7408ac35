// A verifying load generator in the spirit of Jepsen's register checker, simplified by giving every key
// exactly one writer: the expected value of each key is then always known. A write that was
// acknowledged must be visible later (or be superseded by a newer write of the same writer); a write
// that failed with an ambiguous status (UNAVAILABLE, DEADLINE_EXCEEDED, ...) may or may not have
// landed, so either outcome is accepted for it, and nothing else is.
import { spawn } from 'node:child_process';
import { appendFileSync, readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { Ring } from '../../shared/ring.js';
import { grpc, kvClient, type KvClient } from './client.js';

interface KeyState {
  acked: string | undefined;
  /** Values written after the last acknowledgement whose outcome is unknown. */
  maybe: Set<string>;
}

export interface Outcome {
  key: string;
  owner: string;
  code: number | 'ok';
  ms: number;
  at: number;
  details?: string;
}

export interface CheckResult {
  keysChecked: number;
  /** Acknowledged writes whose value (or a newer one by the same writer) is missing. */
  lost: number;
  /** Keys holding a value their writer never wrote. */
  foreign: number;
  problems: string[];
}

export class Verifier {
  readonly state = new Map<string, KeyState>();
  readonly outcomes: Outcome[] = [];
  private stopped = false;
  private running: Promise<void>[] = [];
  readonly ring: Ring;
  private readonly kv: KvClient;

  /**
   * @param keys every key this verifier writes; writer loop i owns keys i, i+writers, ...
   * @param timeoutMs client deadline of each call
   */
  constructor(
    address: string,
    readonly keys: string[],
    members: string[],
    private readonly writers = 8,
    timeoutMs = 10_000,
  ) {
    this.ring = new Ring(members);
    this.kv = kvClient(address, timeoutMs);
    for (const k of keys) this.state.set(k, { acked: undefined, maybe: new Set() });
  }

  get acked(): number {
    return this.outcomes.filter((o) => o.code === 'ok').length;
  }

  failures(): Outcome[] {
    return this.outcomes.filter((o) => o.code !== 'ok');
  }

  /** Starts the writer loops; each runs until stop() or until maxMs has passed (a safety bound). */
  start(maxMs = 60_000): void {
    const until = Date.now() + maxMs;
    this.stopped = false;
    for (let w = 0; w < this.writers; w++) {
      const mine = this.keys.filter((_, i) => i % this.writers === w);
      this.running.push(this.loop(mine, until));
    }
  }

  private async loop(mine: string[], until: number): Promise<void> {
    let seq = 0;
    while (!this.stopped && Date.now() < until) {
      for (const key of mine) {
        if (this.stopped || Date.now() >= until) return;
        await this.writeOnce(key, `${key}#${++seq}`);
      }
    }
  }

  /** One write by this key's only writer; records what the client learnt. */
  async writeOnce(key: string, value: string): Promise<number | 'ok'> {
    const s = this.state.get(key)!;
    const started = performance.now();
    const at = Date.now();
    try {
      await this.kv.put(key, value);
      s.acked = value;
      s.maybe.clear();
      this.outcomes.push({ key, owner: this.ring.owner(key), code: 'ok', ms: performance.now() - started, at });
      return 'ok';
    } catch (err) {
      const e = err as grpc.ServiceError;
      // RESOURCE_EXHAUSTED and INVALID_ARGUMENT are refusals before anything is applied, but treating
      // every failure as "may have landed" keeps the checker conservative: it can only accept more.
      s.maybe.add(value);
      this.outcomes.push({ key, owner: this.ring.owner(key), code: e.code, ms: performance.now() - started, at, details: e.details });
      // Back off a little so a down worker does not turn the loop into a busy spin.
      await new Promise((r) => setTimeout(r, 5));
      return e.code;
    }
  }

  async stop(): Promise<void> {
    this.stopped = true;
    await Promise.all(this.running);
    this.running = [];
  }

  /** Reads every key back through `address` and checks it against what the writers know. */
  async check(address: string): Promise<CheckResult> {
    const kv = kvClient(address, 10_000);
    const result: CheckResult = { keysChecked: 0, lost: 0, foreign: 0, problems: [] };
    try {
      const entries = [...this.state.entries()];
      for (let i = 0; i < entries.length; i += 100) {
        await Promise.all(
          entries.slice(i, i + 100).map(async ([key, s]) => {
            let got: string | undefined;
            try {
              got = await kv.get(key);
            } catch (err) {
              if ((err as grpc.ServiceError).code !== grpc.status.NOT_FOUND) throw err;
            }
            result.keysChecked++;
            if (got === s.acked || (got !== undefined && s.maybe.has(got))) return;
            if (got === undefined && s.acked !== undefined) result.lost++;
            else if (got !== undefined && !got.startsWith(`${key}#`)) result.foreign++;
            else if (s.acked !== undefined) result.lost++;
            else result.foreign++;
            if (result.problems.length < 10) result.problems.push(`${JSON.stringify(key)}: read ${JSON.stringify(got)}, acked ${JSON.stringify(s.acked)}`);
          }),
        );
      }
    } finally {
      kv.close();
    }
    return result;
  }

  close(): void {
    this.kv.close();
  }
}

/** Percentile of a list of numbers (nearest rank); NaN for an empty list. */
export function percentile(values: number[], p: number): number {
  if (values.length === 0) return Number.NaN;
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.min(sorted.length - 1, Math.ceil((p / 100) * sorted.length) - 1)];
}

/**
 * Prints what a test measured as one line (`FIGURES <test> {...}`), so RELIABILITY.md quotes numbers
 * a run produced; with KV_FIGURES_FILE set, the line is also appended there.
 */
export function reportFigures(test: string, figures: Record<string, unknown>): void {
  const line = `FIGURES ${test} ${JSON.stringify(figures)}`;
  console.log(line);
  const file = process.env.KV_FIGURES_FILE;
  if (file) appendFileSync(file, `${line}\n`);
}

/** Resident set size of a process in bytes, from /proc (Linux), or undefined once it has gone. */
export function rssBytes(pid: number): number | undefined {
  try {
    const status = readFileSync(`/proc/${pid}/status`, 'utf8');
    const m = /VmRSS:\s+(\d+) kB/.exec(status);
    return m ? Number(m[1]) * 1024 : undefined;
  } catch {
    return undefined;
  }
}

export interface FloodResult {
  calls: number;
  codes: Record<string, number>;
  /** The first message seen for each failing code. */
  details: Record<string, string>;
  /** Slowest call, and when the first answer came, in ms. */
  maxMs: number;
  firstAnswerMs: number;
}

/**
 * Keeps `concurrency` puts in flight against `keys` for `ms` from a separate process (test/helpers/
 * flood.mjs), so the flood neither shares this process's event loop nor its gRPC connection with the
 * client that measures latency. Bounded: the child is killed if it overruns by 30 s.
 */
export function flood(address: string, keys: string[], valueBytes: number, concurrency: number, ms: number, timeoutMs = 10_000): Promise<FloodResult> {
  const script = fileURLToPath(new URL('./flood.mjs', import.meta.url));
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [script, address, String(concurrency), String(ms), String(valueBytes), String(timeoutMs), ...keys], {
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let out = '';
    child.stdout.on('data', (d: Buffer) => (out += d.toString()));
    child.stderr.on('data', (d: Buffer) => (out += d.toString()));
    const timer = setTimeout(() => child.kill('SIGKILL'), ms + timeoutMs + 30_000);
    child.on('exit', (code) => {
      clearTimeout(timer);
      try {
        if (code !== 0) throw new Error(`exit ${code}`);
        resolve(JSON.parse(out.trim().split('\n').at(-1)!) as FloodResult);
      } catch (err) {
        reject(new Error(`flood failed (${String(err)}): ${out}`));
      }
    });
  });
}

/** Samples a process's RSS every `everyMs` until stop() is called; returns the samples in bytes. */
export function sampleRss(pid: number, everyMs = 100): { stop(): number[] } {
  const samples: number[] = [];
  const take = (): void => {
    const v = rssBytes(pid);
    if (v !== undefined) samples.push(v);
  };
  take();
  const timer = setInterval(take, everyMs);
  return {
    stop: () => {
      clearInterval(timer);
      take();
      return samples;
    },
  };
}

export const MiB = 1024 * 1024;
