// Records a history of concurrent Put/Get/Delete calls on a few shared keys, through any number of
// gateways, for test/helpers/linearizability.ts to judge. Every client writes every key: unlike the
// one-writer-per-key checkers, this is the load under which a lost update or a stale read shows.
import { performance } from 'node:perf_hooks';
import { grpc, kvClient, type KvClient } from './client.js';
import type { HistoryOp } from './linearizability.js';

export interface HistoryStats {
  ops: number;
  answered: number;
  /** Writes whose outcome is unknown (the call failed), and reads that failed. */
  unknownWrites: number;
  failedReads: number;
  errorsByCode: Record<string, number>;
  /** The first message seen for each status code. */
  errorSamples: Record<string, string>;
}

export class HistoryRecorder {
  readonly byKey = new Map<string, HistoryOp[]>();
  readonly stats: HistoryStats = { ops: 0, answered: 0, unknownWrites: 0, failedReads: 0, errorsByCode: {}, errorSamples: {} };
  private readonly clients: KvClient[];
  private running: Promise<void>[] = [];
  private stopping = false;

  /**
   * @param pauseMs each client waits up to this long between calls, so a run of some seconds stays a
   * history the checker reads in about a second
   */
  constructor(
    addresses: string[],
    readonly keys: string[],
    private readonly deadlineMs = 1000,
    private readonly pauseMs = 6,
  ) {
    this.clients = addresses.map((a) => kvClient(a, deadlineMs));
    for (const k of keys) this.byKey.set(k, []);
  }

  /** Starts `n` closed-loop clients; each stops at stop(), after maxMs, or after maxOps calls. */
  start(n: number, maxMs: number, maxOps = 5000): void {
    const until = Date.now() + maxMs;
    this.running = Array.from({ length: n }, (_, c) => this.client(`c${c}`, until, maxOps));
  }

  async stop(): Promise<HistoryStats> {
    this.stopping = true;
    await Promise.all(this.running);
    return this.stats;
  }

  /** One more Get of every key through every gateway, answered or not, into the history. */
  async readAll(): Promise<void> {
    for (const kv of this.clients) await Promise.all(this.keys.map((k) => this.call('final', kv, k, 'get')));
  }

  close(): void {
    for (const c of this.clients) c.close();
  }

  private async client(name: string, until: number, maxOps: number): Promise<void> {
    for (let n = 0; n < maxOps && !this.stopping && Date.now() < until; n++) {
      const kv = this.clients[Math.floor(Math.random() * this.clients.length)];
      const key = this.keys[Math.floor(Math.random() * this.keys.length)];
      const dice = Math.random();
      const failed = await this.call(name, kv, key, dice < 0.4 ? 'put' : dice < 0.5 ? 'delete' : 'get', `${name}-${n}`);
      // After a failure the target may be down for a while: do not spin on it.
      await new Promise((r) => setTimeout(r, failed ? 20 : Math.random() * this.pauseMs));
    }
  }

  /** Runs one call and records it; returns true when it failed. */
  private async call(client: string, kv: KvClient, key: string, kind: HistoryOp['kind'], value?: string): Promise<boolean> {
    const op: HistoryOp = { kind, client, call: performance.now(), ret: Infinity };
    if (kind === 'put') op.value = value;
    this.byKey.get(key)!.push(op);
    this.stats.ops++;
    try {
      if (kind === 'put') {
        const old = await kv.put(key, value!);
        // Values written here are never empty, so an empty previous value means there was none.
        op.out = old === '' ? null : old;
      } else if (kind === 'get') {
        op.out = await kv.get(key);
      } else {
        await kv.del(key);
      }
      op.ret = performance.now();
    } catch (err) {
      const code = (err as grpc.ServiceError).code;
      if (kind === 'get' && code === grpc.status.NOT_FOUND) {
        op.out = null;
        op.ret = performance.now();
      } else {
        const name = grpc.status[code] ?? String(code);
        this.stats.errorsByCode[name] = (this.stats.errorsByCode[name] ?? 0) + 1;
        this.stats.errorSamples[name] ??= `${kind} ${key}: ${(err as Error).message}`;
        if (kind === 'get') this.stats.failedReads++;
        else this.stats.unknownWrites++;
        return true;
      }
    }
    this.stats.answered++;
    return false;
  }
}
