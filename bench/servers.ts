// Starts the processes under test: N workers and a gateway (the store as `npm start` runs it), and
// one more worker serving the public API directly (`--direct-api`) for the no-gateway baseline; with
// `--bare`, a grpc-js server over a Map as the floor under both.
// Databases are preloaded through the worker's own Store class before the servers start, because a
// million single-key Puts over gRPC would take minutes and measure nothing we report.
import { fork, type ChildProcess } from 'node:child_process';
import { existsSync, mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { Ring } from '../shared/ring.js';
import { OpType, type Op } from '../shared/proto.js';
import { Store } from '../worker/store.js';
import type { Protocol } from './clients.js';
import { keyName, makeValue } from './workload.js';

export interface ServerProcess {
  name: string;
  pid: number;
  port: number;
  stop(): Promise<void>;
}

export interface ServerSet {
  address: string;
  /** Which API `address` serves: kvstore's public API unless set (etcd's KV for `--etcd`). */
  protocol?: Protocol;
  processes: ServerProcess[];
  stop(): Promise<void>;
}

export interface ServerOptions {
  dataDir: string;
  workers: number;
  keys: number;
  valueSize: number;
  sync: 'normal' | 'full';
  metrics: 'on' | 'off';
  /** Extra node flags for the servers (e.g. --cpu-prof, which NODE_OPTIONS refuses). */
  execArgv?: string[];
}

// Compiled, this file runs from dist/bench; under vitest it runs from bench/ and the servers are in dist/.
const script = (rel: string): string => {
  const compiled = fileURLToPath(new URL(rel, import.meta.url));
  return existsSync(compiled) ? compiled : fileURLToPath(new URL(`../dist/${rel.replace(/^\.\.\//, '')}`, import.meta.url));
};
const STOP_TIMEOUT_MS = 15_000;

/**
 * The tail of a child's output (for the error if it dies: the servers log to stdout, and say there
 * why they will not start), and a stop: SIGTERM, SIGKILL after 15 s.
 */
export function supervise(child: ChildProcess): { output(): string; gone(): boolean; stop(): Promise<void> } {
  let tail = '';
  const keep = (d: Buffer): void => {
    tail = (tail + d.toString()).slice(-4000);
  };
  child.stdout?.on('data', keep);
  child.stderr?.on('data', keep);
  // A child that could not be started at all emits 'error' and never 'exit'.
  let failed = false;
  child.once('error', (e) => {
    failed = true;
    tail += `\n${e.message}`;
  });
  const exited = new Promise<void>((r) => child.once('exit', () => r()));
  const gone = (): boolean => failed || child.exitCode !== null || child.signalCode !== null;
  return {
    output: () => tail,
    gone,
    async stop() {
      if (gone()) return;
      const timer = setTimeout(() => child.kill('SIGKILL'), STOP_TIMEOUT_MS);
      child.kill('SIGTERM');
      await exited;
      clearTimeout(timer);
    },
  };
}

function start(name: string, file: string, args: string[], execArgv: string[] = []): Promise<ServerProcess> {
  return new Promise((resolve, reject) => {
    const child: ChildProcess = fork(file, args, {
      stdio: ['ignore', 'pipe', 'pipe', 'ipc'],
      execArgv,
    });
    const { output, stop } = supervise(child);
    child.once('exit', (code, signal) => reject(new Error(`${name} exited before listening (code ${code}, signal ${signal}): ${output()}`)));
    child.on('message', (m: { type?: string; port?: number }) => {
      if (m?.type !== 'listening') return;
      resolve({ name, pid: child.pid!, port: m.port!, stop });
    });
  });
}

/** Writes `indices` into `file` in transactions of 10,000 rows. */
function preload(file: string, indices: Iterable<number>, valueSize: number): void {
  const store = new Store(file, { sync: 'normal' });
  try {
    const value = makeValue(valueSize);
    let ops: Op[] = [];
    for (const i of indices) {
      ops.push({ id: 0, type: OpType.PUT, key: keyName(i), value });
      if (ops.length === 10_000) {
        store.applyBatch(ops);
        ops = [];
      }
    }
    if (ops.length > 0) store.applyBatch(ops);
  } finally {
    store.close();
  }
}

const commonArgs = (o: ServerOptions, dir: string): string[] => [
  '--host', '127.0.0.1', '--port', '0', '--metrics-port', '0', '--data-dir', dir, '--log-level', 'warn', '--metrics', o.metrics,
];

/** N workers behind a gateway, keys placed on the worker the ring gives them. */
export async function startGatewayCluster(o: ServerOptions): Promise<ServerSet> {
  const dir = join(o.dataDir, 'cluster');
  mkdirSync(dir, { recursive: true });
  const names = Array.from({ length: o.workers }, (_, i) => `worker-${i}`);
  const ring = new Ring(names);
  const owned = new Map<string, number[]>(names.map((n) => [n, []]));
  for (let i = 0; i < o.keys; i++) owned.get(ring.owner(keyName(i)))!.push(i);
  for (const n of names) preload(join(dir, `${n}.sqlite`), owned.get(n)!, o.valueSize);
  const started: ServerProcess[] = [];
  try {
    // allSettled, not all: when one worker fails to start, the others that did must be stopped too,
    // not left running (and writing into the folder the bench is about to remove).
    const settled = await Promise.allSettled(
      names.map((n) => start(n, script('../worker/main.js'), ['--name', n, '--sync', o.sync, ...commonArgs(o, dir)], o.execArgv)),
    );
    for (const s of settled) if (s.status === 'fulfilled') started.push(s.value);
    const failed = settled.find((s): s is PromiseRejectedResult => s.status === 'rejected');
    if (failed) throw failed.reason;
    const workers = [...started];
    const members = workers.map((w) => `${w.name}=127.0.0.1:${w.port}`).join(',');
    const gateway = await start('gateway', script('../gateway/main.js'), ['--members', members, ...commonArgs(o, dir)], o.execArgv);
    started.unshift(gateway);
  } catch (err) {
    await Promise.all(started.map((p) => p.stop()));
    throw err;
  }
  return {
    address: `127.0.0.1:${started[0].port}`,
    processes: started,
    // Gateway first, so it drains while the workers can still answer.
    stop: async () => {
      await started[0].stop();
      await Promise.all(started.slice(1).map((p) => p.stop()));
    },
  };
}

/** An empty worker next to a gateway cluster, not yet a member: what `kvctl cluster add` brings in. */
export async function startSpareWorker(o: ServerOptions, name: string): Promise<ServerProcess> {
  const dir = join(o.dataDir, 'cluster');
  return start(name, script('../worker/main.js'), ['--name', name, '--sync', o.sync, ...commonArgs(o, dir)], o.execArgv);
}

/** One worker holding every key and serving the public API itself: the no-gateway baseline. */
export async function startDirectWorker(o: ServerOptions): Promise<ServerSet> {
  const dir = join(o.dataDir, 'direct');
  mkdirSync(dir, { recursive: true });
  const name = 'direct-0';
  preload(join(dir, `${name}.sqlite`), range(o.keys), o.valueSize);
  const w = await start(name, script('../worker/main.js'), ['--name', name, '--sync', o.sync, '--direct-api', ...commonArgs(o, dir)], o.execArgv);
  return { address: `127.0.0.1:${w.port}`, processes: [w], stop: () => w.stop() };
}

/** `--bare`: grpc-js with kvstore's public API over a Map (bench/bare-server.ts), the floor for both. */
export async function startBareServer(o: ServerOptions): Promise<ServerSet> {
  const b = await start('bare', script('../bench/bare-server.js'), [String(o.keys), String(o.valueSize)], o.execArgv);
  return { address: `127.0.0.1:${b.port}`, processes: [b], stop: () => b.stop() };
}

function* range(n: number): Iterable<number> {
  for (let i = 0; i < n; i++) yield i;
}
