// One gateway's connection to one worker. Point operations travel on one long-lived socket to the
// worker's port, framed as shared/exchange-codec.ts describes; every request that arrives in one
// event-loop turn is gathered into one batch (flushed on setImmediate, so an idle gateway adds no
// waiting). Measured: a unary gRPC call per request costs ~4x the server CPU of a batched stream, and
// the grpc-js stream itself ~3x a framed socket (docs/performance.md). Control calls (scans,
// snapshots, status, membership) use the gRPC client on the same port.
//
// Bounds: at most maxInflight requests wait on a worker (beyond that, RESOURCE_EXHAUSTED at once, so a
// hung worker cannot grow the gateway's memory); each waits at most timeoutMs (DEADLINE_EXCEEDED).
// A broken connection fails exactly the requests it carried with UNAVAILABLE naming the worker; keys
// are never sent to another worker. A worker that stops answering (SIGSTOP, a dead host) is noticed by
// a keepalive ping even when no request is waiting.
import { connect as netConnect, isIP, type Socket } from 'node:net';
import { connect as tlsConnect, type ConnectionOptions } from 'node:tls';
import * as grpc from '@grpc/grpc-js';
import { KvError, deadlineExceeded, resourceExhausted, unavailable } from '../shared/errors.js';
import { EXCHANGE_ALPN, FrameError, FrameKind, FrameReader, KEEPALIVE_MS, MAGIC, decodeResults, encodeOps, encodeSignal } from '../shared/exchange-codec.js';
import { workerChannelOptions } from '../shared/grpc-options.js';
import { workerApi, type Op, type OpResult, type OpTypeValue } from '../shared/proto.js';

export interface LinkOptions {
  timeoutMs: number;
  maxInflight: number;
  credentials?: grpc.ChannelCredentials;
  /** Merged over the defaults, e.g. the TLS server-name override from shared/tls.ts. */
  channelOptions?: grpc.ChannelOptions;
  /** Membership epoch for ops sent without one (0 until membership is versioned). */
  epoch?: () => number;
  /** TLS for the exchange socket (shared/tls.ts); plain TCP when undefined. */
  tls?: ConnectionOptions;
  /** Ping an idle connection this often, and drop it when nothing arrives for keepaliveTimeoutMs after. */
  keepaliveMs?: number;
  keepaliveTimeoutMs?: number;
}

export interface LinkEvents {
  onState?(up: boolean): void;
  onFailure?(code: number): void;
  /** A request's callback threw: a bug in the caller, reported here instead of breaking the link. */
  onCallbackError?(err: unknown): void;
}

/** How a request's outcome is delivered: a worker's answer (any status code), or why none came. */
export type Answer = (err: KvError | null, r?: OpResult) => void;

interface Pending {
  done: Answer;
  deadline: number;
  /** Connection generation the op was written on; 0 while still queued. */
  gen: number;
  /** Membership epoch the caller routed the op with; its batch is stamped with it. */
  epoch: number;
}

const MAX_BATCH_OPS = 4096;
const MAX_BATCH_BYTES = 1024 * 1024;
const RECONNECT_DELAY_MS = 250;
const CONNECT_TIMEOUT_MS = 5_000;
const ID_LIMIT = 0xffffffff;
const PING = encodeSignal(FrameKind.PING);

/** "host:port", "[v6]:port" or "dns:///host:port" (the forms gRPC accepts for a worker address). */
export function splitAddress(address: string): { host: string; port: number } {
  const a = address.replace(/^dns:\/\/\//, '');
  const m = /^\[([^\]]+)\]:(\d+)$/.exec(a) ?? /^([^:]+):(\d+)$/.exec(a);
  if (!m) throw new Error(`worker address ${JSON.stringify(address)} must be host:port`);
  return { host: m[1], port: Number(m[2]) };
}

export class WorkerLink {
  readonly client: grpc.Client;
  private socket: Socket | undefined;
  private lastError = '';
  private dialFailed = false;
  private gen = 0;
  private lastHeard = 0;
  private readonly pending = new Map<number, Pending>();
  private queue: Op[] = [];
  private queueBytes = 0;
  private flushScheduled = false;
  private nextId = 1;
  private closed = false;
  private up = false;
  private sweeper: NodeJS.Timeout | undefined;
  private readonly sweepMs: number;
  private reconnectTimer: NodeJS.Timeout | undefined;
  private waitingForDrain: Socket | undefined;
  private readonly keepalive: NodeJS.Timeout;

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
    this.sweepMs = Math.max(5, Math.min(100, Math.floor(options.timeoutMs / 10)));
    this.keepalive = setInterval(() => this.ping(), options.keepaliveMs ?? KEEPALIVE_MS);
    this.keepalive.unref();
    this.connect();
  }

  get inflight(): number {
    return this.pending.size;
  }

  get isUp(): boolean {
    return this.up;
  }

  call(type: OpTypeValue, key: string, value: string, epoch?: number): Promise<OpResult> {
    return new Promise((resolve, reject) => this.send(type, key, value, (err, r) => (err ? reject(err) : resolve(r!)), epoch));
  }

  /**
   * call() without a promise, for the gateway's hot path; `done` may run before send returns.
   * `epoch` is the membership epoch the caller chose this worker with (default: the epoch now).
   */
  send(type: OpTypeValue, key: string, value: string, done: Answer, epoch = this.options.epoch?.() ?? 0): void {
    if (this.closed) return done(unavailable(this.name, 'gateway is shutting down'));
    if (this.pending.size >= this.options.maxInflight) {
      this.events.onFailure?.(grpc.status.RESOURCE_EXHAUSTED);
      return done(resourceExhausted(`worker ${this.name} has ${this.pending.size} requests in flight (limit ${this.options.maxInflight}); retry with backoff`));
    }
    const id = this.nextId;
    this.nextId = id >= ID_LIMIT ? 1 : id + 1;
    // Registered before the op is queued: a synchronous flush below sends only ops still pending.
    // performance.now(): the sweep relies on deadlines growing in arrival order, which a wall-clock
    // step backwards would break.
    this.pending.set(id, { done, deadline: performance.now() + this.options.timeoutMs, gen: 0, epoch });
    // The sweep runs only while something is pending: on this kind of VM every wake-up of an idle
    // process costs ~100 µs of CPU, and three links ticking 10 times a second kept an idle gateway busy.
    if (!this.sweeper) {
      this.sweeper = setInterval(this.expire, this.sweepMs);
      this.sweeper.unref();
    }
    this.queue.push({ id, type, key, value });
    this.queueBytes += key.length + value.length + 16;
    if (this.queue.length >= MAX_BATCH_OPS || this.queueBytes >= MAX_BATCH_BYTES) this.flush();
    else if (!this.flushScheduled) {
      this.flushScheduled = true;
      setImmediate(this.flushSoon);
    }
  }

  private readonly flushSoon = (): void => this.flush();

  private flush(): void {
    this.flushScheduled = false;
    if (this.queue.length === 0) return;
    // While the worker is unreachable (the last dial failed), requests fail at once, as gRPC does in
    // TRANSIENT_FAILURE, instead of each turn dialling again; the reconnect timer keeps trying. After
    // an established connection drops, the next flush dials at once.
    if (!this.socket && this.reconnectTimer && this.dialFailed) return this.failQueued(`cannot connect (${this.lastError}); retrying`);
    // A socket destroyed a moment ago still awaits its 'close': dial anew rather than write into it.
    const socket = this.socket && !this.socket.destroyed ? this.socket : this.connect();
    // Backpressure: a worker that stops reading (hung, or slower than the load) must not make the
    // gateway buffer batches without bound. Writing regardless kept every batch sent to a SIGSTOPped
    // worker (expired requests included) in the write buffer until keepalive cut the
    // connection, ~15 s later: memory grew with load x hang time, not with maxInflight. Now ops wait
    // in the queue (still counted in pending, so bounded by maxInflight) until the socket drains,
    // and those that expire meanwhile are dropped unsent.
    if (socket.writableNeedDrain) {
      if (this.waitingForDrain !== socket) {
        this.waitingForDrain = socket;
        socket.once('drain', () => {
          if (this.waitingForDrain === socket) this.waitingForDrain = undefined;
          this.flush();
        });
      }
      return;
    }
    const gen = this.gen;
    while (this.queue.length > 0 && !socket.writableNeedDrain) {
      // A backlog released by 'drain' goes out in batches of bounded size.
      const ops = this.queue.length <= MAX_BATCH_OPS ? this.queue : this.queue.slice(0, MAX_BATCH_OPS);
      this.queue = ops === this.queue ? [] : this.queue.slice(MAX_BATCH_OPS);
      // A batch carries the epoch its ops were routed with, not the epoch at flush time: the worker
      // checks each op against the membership of the batch's epoch, and an op routed under an older
      // one but stamped with a newer one is judged by rules it was not routed by. A Get routed to a
      // key's owner just before a migration started (flushed after the gateway installed it) was
      // accepted by that worker as the key's old owner and answered from its stale copy, or NOT_FOUND
      // once the mover had dropped it, although the key was written on its new owner. Stamped with
      // its routing epoch it is refused, and the cluster retries it on the new membership. Ops of
      // different epochs go in separate frames (only when a new membership lands mid-queue).
      let live: Op[] = [];
      let epoch = 0;
      for (const op of ops) {
        const p = this.pending.get(op.id);
        if (!p) continue;
        if (live.length > 0 && p.epoch !== epoch) {
          this.writeOps(socket, epoch, live);
          live = [];
        }
        epoch = p.epoch;
        p.gen = gen;
        live.push(op);
      }
      if (live.length > 0) this.writeOps(socket, epoch, live);
    }
    this.queueBytes = this.queue.length === 0 ? 0 : this.queue.reduce((n, op) => n + op.key.length + op.value.length + 16, 0);
    if (this.queue.length > 0) this.flush();
  }

  private writeOps(socket: Socket, epoch: number, ops: Op[]): void {
    let frame: Buffer;
    try {
      frame = encodeOps(epoch, ops);
    } catch (err) {
      for (const op of ops) this.reject(op.id, new KvError(grpc.status.INTERNAL, `worker ${this.name}: ${(err as Error).message}`));
      return;
    }
    socket.write(frame);
  }

  private connect(): Socket {
    const gen = ++this.gen;
    const { host, port } = splitAddress(this.address);
    const socket = this.options.tls
      ? tlsConnect({ ...this.options.tls, host, port, ALPNProtocols: [EXCHANGE_ALPN], servername: this.options.tls.servername ?? (isIP(host) ? undefined : host) })
      : netConnect({ host, port });
    this.socket = socket;
    socket.setNoDelay(true);
    // Requests queue (bounded by maxInflight) until the connection is open; writes before that are
    // buffered by the socket and sent on connect.
    socket.write(MAGIC);
    socket.setTimeout(CONNECT_TIMEOUT_MS, () => socket.destroy(new Error(`no connection within ${CONNECT_TIMEOUT_MS} ms`)));
    let established = false;
    socket.once(this.options.tls ? 'secureConnect' : 'connect', () => {
      established = true;
      this.dialFailed = false;
      socket.setTimeout(0);
      this.lastHeard = performance.now();
      this.setUp(true);
    });
    const reader = new FrameReader((kind, buf, start, end) => {
      if (kind === FrameKind.RESULTS) this.answer(decodeResults(buf, start, end).results);
      else if (kind !== FrameKind.PONG) throw new FrameError(`unexpected frame kind ${kind}`);
    });
    socket.on('data', (chunk: Buffer) => {
      this.lastHeard = performance.now();
      try {
        reader.push(chunk);
      } catch (err) {
        // The stream can no longer be trusted to line answers up with requests.
        socket.destroy(new Error(`worker sent a malformed frame: ${(err as Error).message}`));
      }
    });
    let why = 'connection closed';
    this.lastError = why;
    socket.on('error', (err: NodeJS.ErrnoException) => {
      why = err.code ? `${err.code} ${err.message}` : err.message;
      this.lastError = why;
    });
    socket.on('close', () => {
      if (!established) this.dialFailed = true;
      if (this.socket === socket) {
        this.socket = undefined;
        this.setUp(false);
      }
      this.failGeneration(gen, why, this.closed ? grpc.status.CANCELLED : grpc.status.UNAVAILABLE);
      this.scheduleReconnect();
    });
    return socket;
  }

  /**
   * Every outcome goes through here. A callback that throws must not fail the other requests of its
   * batch (the worker applied them) nor escape into a timer, where it would end the process.
   */
  private settle(p: Pending, err: KvError | null, r?: OpResult): void {
    try {
      p.done(err, r);
    } catch (thrown) {
      this.events.onCallbackError?.(thrown);
    }
  }

  private answer(results: OpResult[]): void {
    for (const r of results) {
      const p = this.pending.get(r.id);
      if (!p) continue; // already expired
      this.pending.delete(r.id);
      // The worker's own failures (storage full or busy, internal). NOT_FOUND is an answer, and
      // FAILED_PRECONDITION a stale membership epoch that the cluster retries: neither is one.
      if (r.code !== grpc.status.OK && r.code !== grpc.status.NOT_FOUND && r.code !== grpc.status.FAILED_PRECONDITION) this.events.onFailure?.(r.code);
      this.settle(p, null, r);
    }
  }

  /** Like gRPC keepalive: a worker that is stopped or unreachable answers nothing, not even an error. */
  private ping(): void {
    const socket = this.socket;
    if (!socket || this.closed || socket.connecting) return;
    const timeout = this.options.keepaliveTimeoutMs ?? 5_000;
    const sentAt = performance.now();
    socket.write(PING);
    setTimeout(() => {
      if (this.socket === socket && this.lastHeard < sentAt) {
        socket.destroy(new Error(`worker did not answer a keepalive ping within ${timeout} ms`));
      }
    }, timeout).unref();
  }

  private setUp(up: boolean): void {
    if (up === this.up) return;
    this.up = up;
    this.events.onState?.(up);
  }

  private failQueued(why: string): void {
    const queue = this.queue;
    this.queue = [];
    this.queueBytes = 0;
    for (const op of queue) this.reject(op.id, unavailable(this.name, why));
  }

  private reject(id: number, err: KvError): void {
    const p = this.pending.get(id);
    if (!p) return;
    this.pending.delete(id);
    this.events.onFailure?.(err.code);
    this.settle(p, err);
  }

  /** Keeps a connection open so the up/down state stays true and the first request finds it ready. */
  private scheduleReconnect(): void {
    if (this.closed || this.reconnectTimer) return;
    this.reconnectTimer = setTimeout(() => {
      this.reconnectTimer = undefined;
      if (!this.closed && !this.socket) this.connect();
      if (this.queue.length > 0) this.flush();
    }, RECONNECT_DELAY_MS);
    this.reconnectTimer.unref();
  }

  private failGeneration(gen: number, why: string, code: number): void {
    const reason = code === grpc.status.CANCELLED && this.closed ? 'gateway is shutting down' : why;
    for (const [id, p] of this.pending) if (p.gen === gen) this.reject(id, unavailable(this.name, reason));
  }

  private readonly expire = (): void => {
    if (this.pending.size === 0) {
      clearInterval(this.sweeper);
      this.sweeper = undefined;
      return;
    }
    const now = performance.now();
    let expired = 0;
    for (const [id, p] of this.pending) {
      if (p.deadline > now) break;
      expired++;
      this.reject(id, deadlineExceeded(this.name, this.options.timeoutMs));
    }
    // Ops held back by backpressure that expired are dropped, so the queue stays within maxInflight.
    if (expired > 0 && this.queue.length > 0) this.queue = this.queue.filter((op) => this.pending.has(op.id));
  };

  /** Sends what is queued, waits up to graceMs for answers, then fails the rest and closes. */
  async close(graceMs = 0): Promise<void> {
    this.flush();
    const until = Date.now() + graceMs;
    while (this.pending.size > 0 && Date.now() < until) await new Promise((r) => setTimeout(r, 10));
    this.closed = true;
    clearInterval(this.sweeper);
    clearInterval(this.keepalive);
    if (this.reconnectTimer) clearTimeout(this.reconnectTimer);
    for (const [id, p] of this.pending) {
      this.pending.delete(id);
      this.settle(p, unavailable(this.name, 'gateway is shutting down'));
    }
    this.socket?.end();
    this.client.close();
  }
}
