// A verifying client in the spirit of Jepsen's register checkers: every key has exactly one writer,
// so the value the store must hold is always known. It runs Put/Get/Delete continuously through one
// or more gateways and records every mismatch, lost acknowledged write, resurrected delete and error.
import { grpc, kvClient, type KvClient } from './client.js';

interface Model {
  /** The value the store must hold (undefined = absent), when known. */
  value: string | undefined;
  /** False after a failed write: the write may or may not have happened until the next read. */
  known: boolean;
  /** Alternatives while unknown. */
  maybe: (string | undefined)[];
}

export interface CheckerReport {
  ops: number;
  puts: number;
  gets: number;
  deletes: number;
  errors: number;
  errorsByCode: Record<string, number>;
  mismatches: string[];
  lostWrites: string[];
  resurrections: string[];
}

export class Checker {
  readonly model = new Map<string, Model>();
  readonly report: CheckerReport = { ops: 0, puts: 0, gets: 0, deletes: 0, errors: 0, errorsByCode: {}, mismatches: [], lostWrites: [], resurrections: [] };
  private readonly clients: KvClient[];
  private running: Promise<void>[] = [];
  private stopping = false;
  private seq = 0;

  constructor(
    addresses: string[],
    private readonly writers = 8,
    private readonly keysPerWriter = 100,
  ) {
    this.clients = addresses.map((a) => kvClient(a, 10_000));
  }

  private keyOf(w: number, i: number): string {
    return `chk/${w}/${i}`;
  }

  start(maxMs = 120_000, maxOpsPerWriter = 200_000): void {
    const until = Date.now() + maxMs;
    this.running = Array.from({ length: this.writers }, (_, w) => this.writer(w, until, maxOpsPerWriter));
  }

  async stop(): Promise<CheckerReport> {
    this.stopping = true;
    await Promise.all(this.running);
    return this.report;
  }

  private client(): KvClient {
    return this.clients[Math.floor(Math.random() * this.clients.length)];
  }

  private fail(code: number): void {
    this.report.errors++;
    const name = grpc.status[code] ?? String(code);
    this.report.errorsByCode[name] = (this.report.errorsByCode[name] ?? 0) + 1;
  }

  private judge(key: string, m: Model, got: string | undefined, what: string): void {
    const allowed = m.known ? [m.value] : m.maybe;
    if (allowed.includes(got)) {
      m.known = true;
      m.value = got;
      m.maybe = [];
      return;
    }
    const expected = allowed.map((v) => (v === undefined ? '<absent>' : v)).join(' or ');
    const line = `${what} ${key}: got ${got === undefined ? '<absent>' : got}, expected ${expected}`;
    if (got === undefined) this.report.lostWrites.push(line);
    else if (allowed.every((v) => v === undefined)) this.report.resurrections.push(line);
    else this.report.mismatches.push(line);
    m.known = true;
    m.value = got;
    m.maybe = [];
  }

  private async writer(w: number, until: number, maxOps: number): Promise<void> {
    for (let i = 0; i < this.keysPerWriter; i++) this.model.set(this.keyOf(w, i), { value: undefined, known: true, maybe: [] });
    for (let n = 0; n < maxOps && !this.stopping && Date.now() < until; n++) {
      const key = this.keyOf(w, Math.floor(Math.random() * this.keysPerWriter));
      const m = this.model.get(key)!;
      const dice = Math.random();
      this.report.ops++;
      try {
        if (dice < 0.45) {
          this.report.puts++;
          const value = `${w}:${++this.seq}`;
          try {
            const old = await this.client().put(key, value);
            // The checker never writes empty values, so an empty old value means "there was none".
            this.judge(key, m, old === '' ? undefined : old, 'old value of Put');
          } catch (err) {
            this.uncertain(m, value);
            throw err;
          }
          m.value = value;
          m.known = true;
        } else if (dice < 0.6) {
          this.report.deletes++;
          try {
            await this.client().del(key);
          } catch (err) {
            this.uncertain(m, undefined);
            throw err;
          }
          m.value = undefined;
          m.known = true;
        } else {
          this.report.gets++;
          let got: string | undefined;
          try {
            got = await this.client().get(key);
          } catch (err) {
            if ((err as grpc.ServiceError).code !== grpc.status.NOT_FOUND) throw err;
            got = undefined;
          }
          this.judge(key, m, got, 'Get');
        }
      } catch (err) {
        this.fail((err as grpc.ServiceError).code ?? -1);
        await new Promise((r) => setTimeout(r, 20));
      }
    }
  }

  private uncertain(m: Model, attempted: string | undefined): void {
    const before = m.known ? [m.value] : m.maybe;
    m.known = false;
    m.maybe = [...before, attempted];
  }

  /** Reads every key once more and compares; returns the keys that must exist, for a ListKeys check. */
  async verifyAll(address: string): Promise<string[]> {
    const c = kvClient(address, 10_000);
    const present: string[] = [];
    for (const [key, m] of this.model) {
      let got: string | undefined;
      for (let attempt = 0; ; attempt++) {
        try {
          got = await c.get(key);
          break;
        } catch (err) {
          const code = (err as grpc.ServiceError).code;
          if (code === grpc.status.NOT_FOUND) break;
          // A restarted gateway may still be reconnecting; anything else is a real failure.
          if (code !== grpc.status.UNAVAILABLE || attempt >= 20) throw err;
          await new Promise((r) => setTimeout(r, 250));
        }
      }
      this.judge(key, m, got, 'final Get');
      if (m.value !== undefined) present.push(key);
    }
    c.close();
    return present.sort();
  }

  close(): void {
    for (const c of this.clients) c.close();
  }
}
