// One load-generator thread: a gRPC channel of its own and `concurrency` closed-loop clients, each
// sending its next request as soon as the previous one answers. The main thread says when to start
// counting (after a warm-up) and when to stop; latencies are recorded as microseconds.
import { parentPort, workerData } from 'node:worker_threads';
import * as grpc from '@grpc/grpc-js';
import { benchClient, type Done, type Protocol } from './clients.js';
import { MIX_PUT_SHARE, keyName, makeValue, type Workload } from './workload.js';

export interface ThreadConfig {
  address: string;
  protocol: Protocol;
  concurrency: number;
  keys: number;
  valueSize: number;
  workload: Workload;
  maxOps: number;
  deadlineMs: number;
  maxSamples: number;
  /** Send nothing before the main thread says start (a ListKeys begun in the warm-up would not count). */
  waitForStart: boolean;
}

export type ToThread = { cmd: 'start' } | { cmd: 'stop' };
export type FromThread =
  | { type: 'ready' }
  | { type: 'progress'; ops: number; errors: number }
  | { type: 'done'; ops: number; errors: Record<string, number>; notFound: number; samples: Float64Array; lastError: string };

const cfg = workerData as ThreadConfig;
const port = parentPort!;
const client = benchClient(cfg.protocol, cfg.address);
const value = makeValue(cfg.valueSize, 1);

let measuring = false;
let stopped = false;
let ops = 0;
let errorCount = 0;
let notFound = 0;
let lastError = '';
const errors: Record<string, number> = {};
const samples = new Float64Array(cfg.maxSamples);
let nSamples = 0;

function send(cb: Done): void {
  const key = keyName(Math.floor(Math.random() * cfg.keys));
  const opts = { deadline: Date.now() + cfg.deadlineMs };
  switch (cfg.workload) {
    case 'get':
      return client.get(key, opts, cb);
    case 'put':
      return client.put(key, value, opts, cb);
    case 'delete':
      return client.delete(key, opts, cb);
    case 'listkeys':
      return client.listKeys(opts, cb);
    default:
      // mix, and the load that runs during a backup
      if (Math.random() < MIX_PUT_SHARE) return client.put(key, value, opts, cb);
      return client.get(key, opts, cb);
  }
}

function loop(): Promise<void> {
  return new Promise((resolve) => {
    const next = (): void => {
      if (stopped || ops >= cfg.maxOps) return resolve();
      const t0 = performance.now();
      // An op counts if it started inside the measured window, so a slow call (a ListKeys of 1M keys)
      // that outlives the window is still measured rather than lost.
      const counted = measuring;
      send((err) => {
        if (counted) {
          ops++;
          if (nSamples < samples.length) samples[nSamples++] = (performance.now() - t0) * 1000;
          if (err) {
            // NOT_FOUND is an answer (a Get of a deleted key), not a failure of the store.
            if (err.code === grpc.status.NOT_FOUND) notFound++;
            else {
              errorCount++;
              const name = grpc.status[err.code] ?? String(err.code);
              errors[name] = (errors[name] ?? 0) + 1;
              lastError = err.details ?? err.message;
            }
          }
        }
        next();
      });
    };
    next();
  });
}

let onStart: () => void = () => {};
const started = new Promise<void>((resolve) => (onStart = resolve));

port.on('message', (msg: ToThread) => {
  if (msg.cmd === 'start') {
    measuring = true;
    onStart();
  }
  else if (msg.cmd === 'stop') {
    measuring = false;
    stopped = true;
  }
});

client.waitForReady(Date.now() + 30_000, (err) => {
  if (err) throw new Error(`cannot reach ${cfg.address}: ${err.message}`);
  port.postMessage({ type: 'ready' } satisfies FromThread);
  const progress = setInterval(() => port.postMessage({ type: 'progress', ops, errors: errorCount } satisfies FromThread), 500);
  const go = cfg.waitForStart ? started : Promise.resolve();
  void go.then(() => Promise.all(Array.from({ length: cfg.concurrency }, loop))).then(() => {
    clearInterval(progress);
    const out = samples.slice(0, nSamples);
    port.postMessage({ type: 'done', ops, errors, notFound, samples: out, lastError } satisfies FromThread, [out.buffer]);
    client.close();
  });
});
