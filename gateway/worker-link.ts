// One gateway's connection to one worker. Point operations travel on a single long-lived Exchange
// stream; every request that arrives in one event-loop turn is gathered into one OpBatch message
// (flushed on setImmediate, so an idle gateway adds no waiting). Measured: a unary call per request
// costs ~4x the server CPU of this (README, Performance).
//
// Bounds: at most maxInflight requests wait on a worker (beyond that, RESOURCE_EXHAUSTED at once, so a
// hung worker cannot grow the gateway's memory); each waits at most timeoutMs (DEADLINE_EXCEEDED).
// A broken stream fails exactly the requests it carried with UNAVAILABLE naming the worker; keys are
// never sent to another worker.
import * as grpc from '@grpc/grpc-js';
import { KvError, deadlineExceeded, resourceExhausted, unavailable } from '../shared/errors.js';
import { workerChannelOptions } from '../shared/grpc-options.js';
import { workerApi, type Op, type OpBatch, type OpResult, type OpTypeValue, type ResultBatch } from '../shared/proto.js';

export interface LinkOptions {
  timeoutMs: number;
  maxInflight: number;
  credentials?: grpc.ChannelCredentials;
  /** Merged over the defaults, e.g. the TLS server-name override from shared/tls.ts. */
  channelOptions?: grpc.ChannelOptions;
  /** Membership epoch stamped on every batch (0 until membership is versioned). */
  epoch?: () => number;
}

export interface LinkEvents {
  onState?(up: boolean): void;
  onFailure?(code: number): void;
}

interface Pending {
  resolve(r: OpResult): void;
  reject(e: KvError): void;
  deadline: number;
  /** Stream generation the op was written on; 0 while still queued. */
  gen: number;
}

const MAX_BATCH_OPS = 4096;
const MAX_BATCH_BYTES = 1024 * 1024;
const RECONNECT_DELAY_MS = 250;
const ID_LIMIT = 0xffffffff;

type ExchangeStream = grpc.ClientDuplexStream<OpBatch, ResultBatch>;

export class WorkerLink {
  readonly client: grpc.Client;
  private stream: ExchangeStream | undefined;
  private gen = 0;
  private readonly pending = new Map<number, Pending>();
  private queue: Op[] = [];
  private queueBytes = 0;
  private flushScheduled = false;
  private nextId = 1;
  private closed = false;
  private up = false;
  private readonly sweeper: NodeJS.Timeout;
  private reconnectTimer: NodeJS.Timeout | undefined;
  private waitingForDrain: ExchangeStream | undefined;

  constructor(
    readonly name: string,
    readonly address: string,
    private readonly options: LinkOptions,
    private readonly events: LinkEvents = {},
  ) {
    const Ctor = workerApi().Worker;
    this.client = new Ctor(address, options.credentials ?? grpc.credentials.createInsecure(), { ...workerChannelOptions, ...options.channelOptions });
    // Pending requests are in arrival order and share one timeout, so the sweep stops at the first
    // one still in time: O(expired) per tick, and one timer per link instead of one per request.
    const tick = Math.max(5, Math.min(100, Math.floor(options.timeoutMs / 10)));
    this.sweeper = setInterval(() => this.expire(), tick);
    this.sweeper.unref();
    this.watchState();
    this.openStream();
  }

  get inflight(): number {
    return this.pending.size;
  }

  get isUp(): boolean {
    return this.up;
  }

  call(type: OpTypeValue, key: string, value: string): Promise<OpResult> {
    if (this.closed) return Promise.reject(unavailable(this.name, 'gateway is shutting down'));
    if (this.pending.size >= this.options.maxInflight) {
      this.events.onFailure?.(grpc.status.RESOURCE_EXHAUSTED);
      return Promise.reject(
        resourceExhausted(`worker ${this.name} has ${this.pending.size} requests in flight (limit ${this.options.maxInflight}); retry with backoff`),
      );
    }
    const id = this.nextId;
    this.nextId = id >= ID_LIMIT ? 1 : id + 1;
    // Registered before the op is queued: a synchronous flush below sends only ops still pending.
    const result = new Promise<OpResult>((resolve, reject) => {
      this.pending.set(id, { resolve, reject, deadline: Date.now() + this.options.timeoutMs, gen: 0 });
    });
    this.queue.push({ id, type, key, value });
    this.queueBytes += key.length + value.length + 16;
    if (this.queue.length >= MAX_BATCH_OPS || this.queueBytes >= MAX_BATCH_BYTES) this.flush();
    else if (!this.flushScheduled) {
      this.flushScheduled = true;
      setImmediate(() => this.flush());
    }
    return result;
  }

  private flush(): void {
    this.flushScheduled = false;
    if (this.queue.length === 0) return;
    const stream = this.stream ?? this.openStream();
    // Backpressure: a worker that stops reading (hung, or slower than the load) must not make the
    // gateway buffer batches without bound. Writing regardless kept every batch sent to a SIGSTOPped
    // worker (expired requests included) in the HTTP/2 write buffer until keepalive cut the
    // connection, ~15 s later: memory grew with load x hang time, not with maxInflight. Now ops wait
    // in the queue (still counted in pending, so bounded by maxInflight) until the stream drains,
    // and those that expire meanwhile are dropped unsent.
    if (stream.writableNeedDrain) {
      if (this.waitingForDrain !== stream) {
        this.waitingForDrain = stream;
        stream.once('drain', () => {
          if (this.waitingForDrain === stream) this.waitingForDrain = undefined;
          this.flush();
        });
      }
      return;
    }
    const gen = this.gen;
    while (this.queue.length > 0 && !stream.writableNeedDrain) {
      // A backlog released by 'drain' goes out in batches of bounded size.
      const ops = this.queue.length <= MAX_BATCH_OPS ? this.queue : this.queue.slice(0, MAX_BATCH_OPS);
      this.queue = ops === this.queue ? [] : this.queue.slice(MAX_BATCH_OPS);
      const live = ops.filter((op) => {
        const p = this.pending.get(op.id);
        if (p) p.gen = gen;
        return p !== undefined;
      });
      if (live.length > 0) stream.write({ epoch: this.options.epoch?.() ?? 0, ops: live });
    }
    this.queueBytes = this.queue.length === 0 ? 0 : this.queue.reduce((n, op) => n + op.key.length + op.value.length + 16, 0);
    if (this.queue.length > 0) this.flush();
  }

  private openStream(): ExchangeStream {
    const gen = ++this.gen;
    const stream = (this.client as unknown as { Exchange(): ExchangeStream }).Exchange();
    this.stream = stream;
    stream.on('data', (batch: ResultBatch) => {
      for (const r of batch.results) {
        const p = this.pending.get(r.id);
        if (!p) continue; // already expired
        this.pending.delete(r.id);
        // The worker's own failures (storage full or busy, internal). NOT_FOUND is an answer, and
        // FAILED_PRECONDITION a stale membership epoch that the cluster retries: neither is one.
        if (r.code !== grpc.status.OK && r.code !== grpc.status.NOT_FOUND && r.code !== grpc.status.FAILED_PRECONDITION) this.events.onFailure?.(r.code);
        p.resolve(r);
      }
    });
    const broken = (why: string, code: number): void => {
      if (this.stream === stream) this.stream = undefined;
      this.failGeneration(gen, why, code);
      this.scheduleReconnect();
    };
    stream.on('error', (err: grpc.ServiceError) => broken(err.details || err.message, err.code));
    stream.on('end', () => broken('stream closed by worker', grpc.status.UNAVAILABLE));
    return stream;
  }

  /** Keeps a stream open so the channel stays connected and the up/down state stays true. */
  private scheduleReconnect(): void {
    if (this.closed || this.reconnectTimer) return;
    this.reconnectTimer = setTimeout(() => {
      this.reconnectTimer = undefined;
      if (!this.closed && !this.stream) this.openStream();
      if (this.queue.length > 0) this.flush();
    }, RECONNECT_DELAY_MS);
    this.reconnectTimer.unref();
  }

  private failGeneration(gen: number, why: string, code: number): void {
    for (const [id, p] of this.pending) {
      if (p.gen !== gen) continue;
      this.pending.delete(id);
      this.events.onFailure?.(grpc.status.UNAVAILABLE);
      p.reject(code === grpc.status.CANCELLED && this.closed ? unavailable(this.name, 'gateway is shutting down') : unavailable(this.name, why));
    }
  }

  private expire(): void {
    const now = Date.now();
    let expired = 0;
    for (const [id, p] of this.pending) {
      if (p.deadline > now) break;
      this.pending.delete(id);
      expired++;
      this.events.onFailure?.(grpc.status.DEADLINE_EXCEEDED);
      p.reject(deadlineExceeded(this.name, this.options.timeoutMs));
    }
    // Ops held back by backpressure that expired are dropped, so the queue stays within maxInflight.
    if (expired > 0 && this.queue.length > 0) this.queue = this.queue.filter((op) => this.pending.has(op.id));
  }

  private watchState(): void {
    const channel = this.client.getChannel();
    const check = (): void => {
      if (this.closed) return;
      const state = channel.getConnectivityState(false);
      const up = state === grpc.connectivityState.READY;
      if (up !== this.up) {
        this.up = up;
        this.events.onState?.(up);
      }
      channel.watchConnectivityState(state, Infinity, check);
    };
    check();
  }

  /** Sends what is queued, waits up to graceMs for answers, then fails the rest and closes. */
  async close(graceMs = 0): Promise<void> {
    this.flush();
    const until = Date.now() + graceMs;
    while (this.pending.size > 0 && Date.now() < until) await new Promise((r) => setTimeout(r, 10));
    this.closed = true;
    clearInterval(this.sweeper);
    if (this.reconnectTimer) clearTimeout(this.reconnectTimer);
    for (const [id, p] of this.pending) {
      this.pending.delete(id);
      p.reject(unavailable(this.name, 'gateway is shutting down'));
    }
    this.stream?.end();
    this.client.close();
  }
}
