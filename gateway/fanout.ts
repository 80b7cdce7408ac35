// Scatter/gather to every worker. Every worker's answer and every worker's error is collected before
// deciding, and the answer is complete or an error naming each worker that failed: never a silently
// partial result.
import * as grpc from '@grpc/grpc-js';
import { KvError, isServiceError, statusName } from '../shared/errors.js';
import type { WorkerLink } from './worker-link.js';

export interface WorkerFailure {
  worker: string;
  code: number;
  reason: string;
}

export interface FanoutResult<T> {
  ok: Map<string, T>;
  failed: WorkerFailure[];
}

export async function fanout<T>(links: WorkerLink[], fn: (link: WorkerLink) => Promise<T>): Promise<FanoutResult<T>> {
  const settled = await Promise.allSettled(links.map(fn));
  const ok = new Map<string, T>();
  const failed: WorkerFailure[] = [];
  settled.forEach((s, i) => {
    const worker = links[i].name;
    if (s.status === 'fulfilled') ok.set(worker, s.value);
    else failed.push({ worker, ...describe(s.reason) });
  });
  return { ok, failed };
}

function describe(err: unknown): { code: number; reason: string } {
  if (err instanceof KvError) return { code: err.code, reason: err.message };
  if (isServiceError(err)) return { code: err.code, reason: `${statusName(err.code)}: ${err.details}` };
  return { code: grpc.status.INTERNAL, reason: String(err) };
}

export function describeFailures(failed: WorkerFailure[]): string {
  return failed.map((f) => `${f.worker} (${f.reason})`).join('; ');
}

/** k-way merge of ascending lists into one ascending list with each key once. */
export function mergeSorted(lists: string[][]): string[] {
  const out: string[] = [];
  const pos = lists.map(() => 0);
  for (;;) {
    let best = -1;
    let bestKey = '';
    for (let i = 0; i < lists.length; i++) {
      if (pos[i] >= lists[i].length) continue;
      const k = lists[i][pos[i]];
      if (best < 0 || k < bestKey) {
        best = i;
        bestKey = k;
      }
    }
    if (best < 0) return out;
    pos[best]++;
    if (out.length === 0 || out[out.length - 1] !== bestKey) out.push(bestKey);
  }
}
