#!/usr/bin/env node
// `npm run bench`: starts the store (gateway + N workers) and a worker serving the public API directly,
// preloads keys, and drives both with the same closed-loop load, phase by phase and interleaved, so
// every gateway figure has its no-gateway baseline from the same run. With --etcd, a single-member
// etcd gets the same keys and load in the phases next to them; with --bare, a grpc-js server over a
// Map (the floor any Node gRPC server pays). See docs/performance.md.
import { existsSync, mkdtempSync, readdirSync, rmSync, statSync } from 'node:fs';
import { cpus, loadavg, tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import * as grpc from '@grpc/grpc-js';
import { Command, InvalidArgumentError, Option } from 'commander';
import { publicClientOptions } from '../shared/grpc-options.js';
import { adminApi, publicApi, type ClusterStatus } from '../shared/proto.js';
import { benchClient, type Protocol } from './clients.js';
import { etcdVersion, startEtcd } from './etcd.js';
import { runLoad, type LoadSpec } from './load.js';
import { costBetween, peakRssMiB, readCost, rssMiB, type CostReading } from './procstat.js';
import { medianComparison, rate, toMarkdown, writeReport, type Comparison, type IdleCost, type Phase, type Report, type Target } from './report.js';
import { startBareServer, startDirectWorker, startGatewayCluster, startSpareWorker, type ServerOptions, type ServerSet } from './servers.js';
import { WORKLOADS, keyName, makeValue, type Workload } from './workload.js';

const list = (raw: string): string[] => raw.split(',').map((s) => s.trim()).filter(Boolean);
const int = (raw: string): number => {
  const n = Number(raw);
  if (raw.trim() === '' || !Number.isFinite(n) || n < 0) throw new InvalidArgumentError('expected a non-negative number');
  return n;
};

/** A count (workers, keys, clients, rounds): a whole number of at least 1. 0 clients left no load level. */
const count = (raw: string): number => {
  const n = Number(raw);
  if (raw.trim() === '' || !Number.isInteger(n) || n < 1) throw new InvalidArgumentError('expected a whole number of at least 1');
  return n;
};
/** A measured duration: more than 0 seconds (a 0 s phase has no rate). */
const seconds = (raw: string): number => {
  const n = int(raw);
  if (n <= 0) throw new InvalidArgumentError('expected a number of seconds above 0');
  return n;
};

/** Parsers for comma-separated flags: a bad entry is a usage error naming the flag, before anything starts. */
const countList = (raw: string): string => {
  const items = list(raw);
  if (items.length === 0) throw new InvalidArgumentError('expected a comma-separated list of whole numbers of at least 1');
  items.forEach(count);
  return raw;
};
const workloadList = (raw: string): string => {
  const items = list(raw);
  const bad = items.filter((w) => !(WORKLOADS as readonly string[]).includes(w));
  if (bad.length > 0 || items.length === 0) throw new InvalidArgumentError(`unknown workload ${bad.map((w) => `"${w}"`).join(', ') || '(none given)'}; choose from ${WORKLOADS.join(', ')}`);
  return raw;
};
const valueSize = (raw: string): number => {
  const n = int(raw);
  if (!Number.isInteger(n) || n > 2048) throw new InvalidArgumentError('expected a whole number of bytes, at most 2048');
  return n;
};

const program = new Command('kv-bench')
  .description('Closed-loop benchmark of kvstore: through the gateway and straight to one worker, in one run')
  .option('--address <host:port>', 'benchmark a running store instead of starting one (no direct baseline, no server CPU)')
  .option('--workers <n>', 'workers behind the gateway', count, 3)
  .option('--workloads <list>', `comma-separated, run in this order: ${WORKLOADS.join(', ')}`, workloadList, 'get,put,mix,listkeys,backup,delete')
  .option('--concurrency <list>', 'closed-loop clients, comma-separated levels', countList, '8,64')
  .option('--duration <s>', 'measured seconds per phase', seconds, 10)
  .option('--warmup <s>', 'unmeasured seconds before each phase', int, 2)
  .option('--keys <n>', 'key space, preloaded before the run', count, 100_000)
  .option('--value-size <bytes>', 'value size (0-2048)', valueSize, 100)
  .option('--threads <n>', 'load-generator threads', count, 2)
  .option('--rounds <n>', 'run each gateway/direct pair (and etcd and bare, with --etcd and --bare) this many times, alternating the order; ratios are the median of the rounds', count, 1)
  .addOption(new Option('--sync <mode>', 'worker durability for the main phases').choices(['normal', 'full']).default('normal'))
  .addOption(new Option('--metrics <on|off>', 'per-request metrics on the servers for the main phases').choices(['on', 'off']).default('on'))
  .option('--compare-metrics', 'also run mix at the highest concurrency with KV_METRICS=off on both targets')
  .option('--compare-sync', 'also run put and mix at the highest concurrency with --sync full on both targets')
  .option('--scale <list>', 'also measure memory, mix ops/s and ListKeys at these key counts (e.g. 100000,1000000)', countList)
  .option('--migration', 'also run mix at the highest concurrency while a worker is added (keys moving), next to steady state')
  .option('--server-warmup <s>', 'before its first phase, drive each server set unmeasured with mix at the highest concurrency for this many seconds (V8 compiling their hot paths); 0 skips', int, 5)
  .option('--idle <s>', 'measure each server set idle for this many seconds before the load, after as many (up to 5) to settle: CPU and wake-ups per second; 0 skips', int, 10)
  .option('--no-direct', 'skip the direct-worker baseline')
  .option('--etcd', 'also run get, put and mix on a single-member etcd 3.4 with its defaults (fsync per commit) next to each gateway phase, and with --compare-sync next to --sync full; needs `etcd` on PATH: apt-get install etcd-server')
  .option('--bare', 'also run get, put and mix on a bare grpc-js server over a Map (kvstore\'s public API, no validation, routing or storage), next to the direct worker in each round: the floor under both targets')
  .option('--cpu-prof <dir>', 'run the servers under node --cpu-prof, profiles written to <dir>')
  .option('--quick', 'smoke test: ~2,000 keys, 2 s phases, concurrency 8, no comparisons (a few seconds per phase)')
  .option('--out <dir>', 'where the JSON and Markdown reports go', fileURLToPath(new URL('../../bench/results', import.meta.url)))
  .showHelpAfterError();

program.parse();
const o = program.opts<{
  address?: string;
  workers: number;
  workloads: string;
  concurrency: string;
  duration: number;
  warmup: number;
  keys: number;
  valueSize: number;
  threads: number;
  rounds: number;
  sync: 'normal' | 'full';
  metrics: 'on' | 'off';
  compareMetrics?: boolean;
  compareSync?: boolean;
  scale?: string;
  migration?: boolean;
  idle: number;
  direct: boolean;
  etcd?: boolean;
  bare?: boolean;
  cpuProf?: string;
  quick?: boolean;
  serverWarmup: number;
  out: string;
}>();

if (o.quick) {
  // Smoke-test values only where the command line left the default: a flag given next to --quick
  // wins, as --workloads always did (`--quick --duration 1` used to run 2 s phases, silently).
  const quick = { duration: 2, warmup: 0.5, serverWarmup: 1, idle: 1, keys: 2000, concurrency: '8', workloads: 'get,put,mix,listkeys,backup' };
  for (const [name, value] of Object.entries(quick)) if (program.getOptionValueSource(name) === 'default') Object.assign(o, { [name]: value });
  Object.assign(o, { compareMetrics: false, compareSync: false, scale: undefined });
}
const workloads = list(o.workloads) as Workload[];
const levels = list(o.concurrency).map(count);
const maxLevel = Math.max(...levels);
/**
 * The workloads etcd and the bare server run: point calls only. etcd's KV API has Range and Put and
 * nothing like ListKeys over gRPC or Backup; the bare server is a Map, the floor under point calls.
 */
const POINT_WORKLOADS: readonly Workload[] = ['get', 'put', 'mix'];
// A usage error, said in one line before anything starts (not the whole --help).
const fail = (msg: string): never => {
  process.stderr.write(`kv-bench: ${msg}\n`);
  process.exit(1);
};
if (o.bare && o.address) fail('--bare compares with the servers the bench starts; it cannot be used with --address');
// Each starts servers of its own, which a run against --address has none of: said, not skipped silently.
for (const [set, flag] of [[o.compareMetrics, '--compare-metrics'], [o.compareSync, '--compare-sync'], [o.migration, '--migration'], [o.scale, '--scale']] as const) {
  if (set && o.address) fail(`${flag} starts servers of its own; it cannot be used with --address`);
}
let etcdRelease: string | undefined;
if (o.etcd) {
  if (o.address) fail('--etcd compares with the servers the bench starts; it cannot be used with --address');
  try {
    etcdRelease = etcdVersion();
  } catch (err) {
    fail((err as Error).message);
  }
}

const log = (msg: string): void => void process.stderr.write(`${msg}\n`);
const dataDir = mkdtempSync(join(tmpdir(), 'kvbench-'));
const running: ServerSet[] = [];
const phases: Phase[] = [];
const idle: IdleCost[] = [];

async function cleanup(): Promise<void> {
  await Promise.all(running.splice(0).map((s) => s.stop().catch(() => undefined)));
  rmSync(dataDir, { recursive: true, force: true });
}
// Ctrl-C, `kill` or a closed terminal: stop the servers and remove the folder. Without this, SIGTERM
// ended the bench at once: the Node servers end with their IPC channel, but etcd kept running and the
// temporary folder, preloaded databases and all, stayed.
for (const [signal, code] of [['SIGINT', 130], ['SIGTERM', 143], ['SIGHUP', 129]] as const) {
  process.on(signal, () => void cleanup().then(() => process.exit(code)));
}

function serverOptions(over: Partial<ServerOptions> = {}): ServerOptions {
  const execArgv = o.cpuProf ? ['--cpu-prof', `--cpu-prof-dir=${o.cpuProf}`] : undefined;
  return { dataDir, workers: o.workers, keys: o.keys, valueSize: o.valueSize, sync: o.sync, metrics: o.metrics, execArgv, ...over };
}

/**
 * Options for servers that start in a fresh folder of their own, so nothing carries over from another
 * set: not a database another running worker holds (it would refuse to start), nor the membership a
 * migration left in the workers' files (a worker that no longer runs would stay on the ring).
 */
function ownOptions(folder: string, over: Partial<ServerOptions> = {}): ServerOptions {
  return serverOptions({ ...over, dataDir: join(dataDir, folder) });
}

const STARTERS = { gateway: startGatewayCluster, direct: startDirectWorker, bare: startBareServer, etcd: (opts: ServerOptions) => startEtcd(opts.dataDir) };

/** Starts a server set; `warm`: and warms it up (warmUp) before returning. */
async function up(kind: keyof typeof STARTERS, opts: ServerOptions, warm = true): Promise<ServerSet> {
  const t0 = Date.now();
  const set = await STARTERS[kind](opts);
  running.push(set);
  // etcd's keys go in over its own API, as a client would write them.
  if (kind === 'etcd') await preloadRemote(set.address, opts.keys, 'etcd');
  const settings = kind === 'etcd' ? `etcd ${etcdRelease}, its defaults` : kind === 'bare' ? 'grpc-js over a Map' : `sync ${opts.sync}, metrics ${opts.metrics}`;
  log(`started ${kind} (${opts.keys} keys, ${settings}) at ${set.address} in ${((Date.now() - t0) / 1000).toFixed(1)} s: ${set.processes.map((p) => `${p.name}=${p.pid}`).join(' ')}`);
  if (warm) await warmUp(kind, set, opts.keys);
  return set;
}

/**
 * Unmeasured load on a fresh server set before its first phase. V8 compiles each process's hot paths
 * in its first seconds of load, and a worker behind the gateway, serving a third of the requests, gets
 * there three times slower than the direct worker: 3–11 s into a run's first phase a worker spent
 * ~10% of its CPU in the compiler, which the first phase then billed to the gateway path.
 */
async function warmUp(target: string, set: ServerSet, keys: number): Promise<void> {
  if (!(o.serverWarmup > 0)) return;
  const r = await runLoad({ ...loadSpec(set.address, set.protocol, 'mix', maxLevel, keys), warmupMs: 0, durationMs: o.serverWarmup * 1000 });
  log(`warmed ${target} up: ${r.ops} requests in ${o.serverWarmup} s, ${r.errors} errors${r.errors ? ` (${r.lastError})` : ''}`);
}

/** The sets measured side by side over the same seconds, so they share the machine's background load. */
async function measureIdle(sets: [string, ServerSet][], seconds: number): Promise<void> {
  if (!(seconds > 0)) return;
  // Right after a start, V8 is still compiling and collecting start-up garbage: that is not idling.
  const settle = Math.min(5, seconds);
  log(`measuring ${sets.map(([t]) => t).join(', ')} idle for ${seconds} s, after ${settle} s to settle`);
  await new Promise((r) => setTimeout(r, settle * 1000));
  const procs = sets.flatMap(([target, set]) => set.processes.map((p) => ({ target, p, before: readCost(p.pid) })));
  const t0 = performance.now();
  await new Promise((r) => setTimeout(r, seconds * 1000));
  const s = (performance.now() - t0) / 1000;
  for (const { target, p, before } of procs) {
    const c = costBetween(before, readCost(p.pid));
    idle.push({ target, name: p.name, pid: p.pid, seconds: s, cpuMsPerSecond: (c.cpuSeconds * 1000) / s, wakeupsPerSecond: c.woken / s });
  }
}

async function down(set: ServerSet): Promise<void> {
  running.splice(running.indexOf(set), 1);
  await set.stop();
}

/** Closed-loop load with the run's settings: its threads, value size, warm-up and duration. */
function loadSpec(address: string, protocol: Protocol | undefined, workload: Workload, concurrency: number, keys: number): LoadSpec {
  return {
    address,
    protocol: protocol ?? 'kvstore',
    workload,
    concurrency,
    threads: o.threads,
    keys,
    valueSize: o.valueSize,
    warmupMs: o.warmup * 1000,
    durationMs: o.duration * 1000,
    maxOpsPerThread: 50_000_000,
    deadlineMs: 10_000,
  };
}

/** One phase against one target, with the servers' CPU and context switches read at the start and end of counting. */
async function phase(
  target: string,
  set: ServerSet | undefined,
  address: string,
  workload: Workload,
  concurrency: number,
  keys: number,
  note?: string,
  /** Called as counting starts, after the warm-up: for work the phase measures the load during. */
  onStart?: () => void,
): Promise<Phase> {
  const procs = set?.processes ?? [];
  let start: CostReading[] = [];
  let end: CostReading[] = [];
  const listing = workload === 'listkeys';
  // backup: the mix load runs while one Backup call snapshots every worker.
  const base = loadSpec(address, set?.protocol, workload === 'backup' ? 'mix' : workload, concurrency, keys);
  // One ListKeys at a time: it is a whole-store scan; its time and memory are the point, not its rate.
  const spec: LoadSpec = listing ? { ...base, concurrency: 1, threads: 1, warmupMs: 0, deadlineMs: 120_000, drain: true } : base;
  let backup: Promise<{ seconds: number; ok: boolean; message: string }> | undefined;
  const label = `[${target} ${workload} c=${spec.concurrency} keys=${keys}]`;
  const result = await runLoad(spec, {
    onStart: () => {
      start = procs.map((p) => readCost(p.pid));
      if (workload === 'backup') backup = callBackup(address);
      onStart?.();
    },
    onStop: () => {
      end = procs.map((p) => readCost(p.pid));
    },
    onProgress: (ops, errors, elapsed) => log(`${label} ${(elapsed / 1000).toFixed(0)} s: ${ops} ops, ${(ops / (elapsed / 1000)).toFixed(0)}/s, ${errors} errors`),
  });
  const servers = procs.map((p, i) => {
    const c = costBetween(start[i], end[i]);
    return {
      name: p.name,
      pid: p.pid,
      cpuSeconds: c.cpuSeconds,
      cpuUsPerOp: (c.cpuSeconds / result.ops) * 1e6,
      wakeupsPerOp: c.woken / result.ops,
      preemptionsPerOp: c.preempted / result.ops,
      peakRssMiB: peakRssMiB(p.pid),
      rssMiB: rssMiB(p.pid),
    };
  });
  const serverCpu = servers.reduce((n, s) => n + s.cpuSeconds, 0);
  const p: Phase = {
    target,
    workload,
    concurrency: spec.concurrency,
    keys,
    // Other work on the machine shows here; compare phases with similar load averages.
    loadAvg1m: loadavg()[0],
    ...(note ? { note } : {}),
    result,
    servers,
    serverCpuUsPerOp: procs.length > 0 ? (serverCpu / result.ops) * 1e6 : Number.NaN,
    serverWakeupsPerOp: procs.length > 0 ? servers.reduce((n, s) => n + s.wakeupsPerOp, 0) : Number.NaN,
    loadgenCpuUsPerOp: (result.loadgenCpuSeconds / result.ops) * 1e6,
  };
  if (workload === 'backup' && backup) {
    const b = await backup;
    const bytes = set ? backupBytes(set) : Number.NaN;
    p.extra = { backupOk: b.ok, backupSeconds: b.seconds, backupMiB: bytes / 2 ** 20, backupMiBPerSec: bytes / 2 ** 20 / b.seconds };
    if (!b.ok) log(`${label} backup failed: ${b.message}`);
  }
  if (listing) {
    const gw = servers[0];
    p.extra = { listKeysSecondsP50: result.latencyUs.p50 / 1e6, calls: result.ops, peakRssMiBFirstProcess: gw?.peakRssMiB ?? Number.NaN };
  }
  const l = result.latencyUs;
  log(`${label} done: ${rate(result.opsPerSec)} ops/s, p50 ${(l.p50 / 1000).toFixed(2)} ms, p99 ${(l.p99 / 1000).toFixed(2)} ms, ` +
    `${result.errors} errors${result.errors ? ` (${result.lastError})` : ''}, server CPU ${p.serverCpuUsPerOp.toFixed(1)} µs/op, ${p.serverWakeupsPerOp.toFixed(2)} wake-ups/op`);
  phases.push(p);
  // A delete phase empties part of the key space, and the phases after it (the next concurrency
  // level, the next round, a variant's reference phase, which runs after the main workloads) must
  // find every key again, as the preload left it: Gets of deleted keys are cheap NOT_FOUNDs, and
  // Deletes of them write nothing.
  if (workload === 'delete') {
    const t0 = Date.now();
    await preloadRemote(address, keys, spec.protocol);
    log(`${label} put the ${keys} keys back in ${((Date.now() - t0) / 1000).toFixed(1)} s`);
  }
  return p;
}

function adminCall(address: string, method: 'AddMembers' | 'Status', req: object): Promise<ClusterStatus> {
  const client = new (adminApi().Admin)(address, grpc.credentials.createInsecure()) as unknown as Record<
    string,
    (req: object, opts: grpc.CallOptions, cb: (err: grpc.ServiceError | null, res?: ClusterStatus) => void) => void
  > & { close(): void };
  return new Promise((resolve, reject) => {
    client[method](req, { deadline: Date.now() + 30_000 }, (err, res) => {
      client.close();
      if (err) reject(new Error(`admin ${method}: ${err.message}`));
      else resolve(res!);
    });
  });
}

/** The longest the bench waits for an added worker's keys to arrive before it gives up. */
const MIGRATION_LIMIT_MS = 600_000;

/** Adds `spare` to the cluster behind `address`; resolves with the seconds until the ring is stable again. */
async function addWorker(address: string, spare: { name: string; port: number }): Promise<number> {
  const t0 = performance.now();
  const added = await adminCall(address, 'AddMembers', { members: [{ name: spare.name, address: `127.0.0.1:${spare.port}` }] });
  log(`added ${spare.name}: epoch ${added.epoch}, ${added.phase}`);
  for (;;) {
    const st = await adminCall(address, 'Status', {});
    if (st.phase === 'stable') return (performance.now() - t0) / 1000;
    if (performance.now() - t0 > MIGRATION_LIMIT_MS) throw new Error(`adding ${spare.name}: not stable after ${MIGRATION_LIMIT_MS / 1000} s (${st.phase})`);
    await new Promise((r) => setTimeout(r, 200));
  }
}

function callBackup(address: string): Promise<{ seconds: number; ok: boolean; message: string }> {
  const Ctor = publicApi().KeyValueStore;
  const client = new Ctor(address, grpc.credentials.createInsecure(), publicClientOptions) as unknown as {
    Backup(req: object, opts: grpc.CallOptions, cb: (err: grpc.ServiceError | null, res?: { success: boolean; message: string }) => void): void;
    close(): void;
  };
  const t0 = performance.now();
  return new Promise((resolve) => {
    client.Backup({}, { deadline: Date.now() + 600_000 }, (err, res) => {
      client.close();
      resolve({ seconds: (performance.now() - t0) / 1000, ok: !err && !!res?.success, message: err ? err.message : (res?.message ?? '') });
    });
  });
}

/** Bytes of every snapshot file the servers wrote under the data folder. */
function backupBytes(set: ServerSet): number {
  void set;
  let total = 0;
  const walk = (dir: string): void => {
    if (!existsSync(dir)) return;
    for (const e of readdirSync(dir, { withFileTypes: true })) {
      const p = join(dir, e.name);
      if (e.isDirectory()) walk(p);
      else if (e.name.endsWith('.sqlite') && p.includes('/backups/')) total += statSync(p).size;
    }
  };
  walk(dataDir);
  // Each backup phase measures the newest set only: earlier sets are removed after being counted.
  rmSync(join(dataDir, 'cluster', 'backups'), { recursive: true, force: true });
  rmSync(join(dataDir, 'direct', 'backups'), { recursive: true, force: true });
  return total;
}

async function preloadRemote(address: string, keys: number, protocol: Protocol = 'kvstore'): Promise<void> {
  const client = benchClient(protocol, address);
  const value = makeValue(o.valueSize);
  let next = 0;
  const one = (): Promise<void> =>
    new Promise((resolve, reject) => {
      const step = (): void => {
        if (next >= keys) return resolve();
        client.put(keyName(next++), value, { deadline: Date.now() + 10_000 }, (err) => (err ? reject(err) : step()));
      };
      step();
    });
  await Promise.all(Array.from({ length: 64 }, one));
  client.close();
}

function compare(variant: string, a: Phase | undefined, b: Phase | undefined): Comparison | undefined {
  if (!a || !b) return undefined;
  return {
    variant,
    workload: a.workload,
    concurrency: a.concurrency,
    opsRatio: a.result.opsPerSec / b.result.opsPerSec,
    cpuPerOpRatio: a.serverCpuUsPerOp / b.serverCpuUsPerOp,
    p99Ratio: a.result.latencyUs.p99 / b.result.latencyUs.p99,
    errors: a.result.errors + b.result.errors,
  };
}

async function main(): Promise<void> {
  const comparisons: Comparison[] = [];
  const started = new Date().toISOString();
  const loadStart = loadavg();
  // The most recent match: a variant is compared with the reference phase run right next to it.
  const find = (target: string, workload: string, c: number, keys = o.keys): Phase | undefined =>
    [...phases].reverse().find((p) => p.target === target && p.workload === workload && p.concurrency === c && p.keys === keys);

  if (o.address) {
    log(`preloading ${o.keys} keys into ${o.address} over gRPC`);
    await preloadRemote(o.address, o.keys);
    for (const w of workloads) for (const c of w === 'listkeys' ? [1] : levels) await phase('remote', undefined, o.address, w, c, o.keys);
  } else {
    // Warmed up after the idle measurement, which is of servers that have not served yet.
    const gw = await up('gateway', serverOptions(), false);
    const direct = o.direct ? await up('direct', serverOptions(), false) : undefined;
    const etcd = o.etcd ? await up('etcd', serverOptions(), false) : undefined;
    const bare = o.bare ? await up('bare', serverOptions(), false) : undefined;
    const mainSets = Object.entries({ gateway: gw, direct, etcd, bare }).filter((e): e is [string, ServerSet] => e[1] !== undefined);
    await measureIdle(mainSets, o.idle);
    for (const [target, set] of mainSets) await warmUp(target, set, o.keys);
    // Interleaved per phase: the machine's background noise drifts, so neighbours compare best. With
    // --rounds, each set runs again in the reverse order, and the ratios are the median: on a shared
    // 2-core machine one pair's ratio moved by 0.3 from one run to the next. The gateway runs in the
    // middle, next to both of its references (direct and etcd); the bare floor runs next to the direct
    // worker, the closest thing to it.
    const pairs = [['gateway', 'direct'], ['gateway', 'etcd'], ['direct', 'etcd'], ['gateway', 'bare'], ['direct', 'bare']] as const;
    for (const w of workloads) {
      for (const c of w === 'listkeys' ? [1] : levels) {
        const withEtcd = etcd && POINT_WORKLOADS.includes(w) ? etcd : undefined;
        const withBare = bare && POINT_WORKLOADS.includes(w) ? bare : undefined;
        const rounds = w === 'listkeys' || w === 'backup' || (!direct && !withEtcd && !withBare) ? 1 : Math.max(1, o.rounds);
        const each = new Map<string, Comparison[]>();
        for (let r = 0; r < rounds; r++) {
          const note = rounds > 1 ? `round ${r + 1} of ${rounds}` : undefined;
          const order = [['etcd', withEtcd], ['gateway', gw], ['direct', direct], ['bare', withBare]] as const;
          for (const [target, set] of r % 2 === 0 ? order : [...order].reverse()) {
            if (set) await phase(target, set, set.address, w, c, o.keys, note);
          }
          for (const [a, b] of pairs) {
            const cmp = compare(`${a} ÷ ${b}`, find(a, w, c), find(b, w, c));
            if (cmp) each.set(cmp.variant, [...(each.get(cmp.variant) ?? []), cmp]);
          }
        }
        for (const all of each.values()) {
          if (all.length > 1) comparisons.push(...all.map((x, i) => ({ ...x, variant: `${x.variant}, round ${i + 1}` })));
          comparisons.push(medianComparison(all));
        }
      }
    }
    // Each variant phase runs right after a fresh reference phase on the default servers (still up), so
    // the two share the machine's background load: comparing with a phase minutes earlier would
    // measure the neighbours, not the setting.
    const variant = async (name: string, over: Partial<ServerOptions>, variantWorkloads: Workload[], withEtcd = false): Promise<void> => {
      // The default servers are still running.
      const own = ownOptions(name, over);
      const g = await up('gateway', own);
      const d = direct ? await up('direct', own) : undefined;
      for (const w of variantWorkloads) {
        await phase('gateway', gw, gw.address, w, maxLevel, o.keys, `reference for ${name}`);
        await phase(`gateway/${name}`, g, g.address, w, maxLevel, o.keys);
        if (withEtcd && etcd) await phase('etcd', etcd, etcd.address, w, maxLevel, o.keys, `reference for ${name}`);
        if (direct && d) {
          await phase('direct', direct, direct.address, w, maxLevel, o.keys, `reference for ${name}`);
          await phase(`direct/${name}`, d, d.address, w, maxLevel, o.keys);
        }
        const against = [
          ...['gateway', 'direct'].map((t) => [`${t}/${name}`, t]),
          [`gateway/${name}`, `direct/${name}`],
          ...(withEtcd ? ['gateway', 'direct'].map((t) => [`${t}/${name}`, 'etcd']) : []),
        ];
        for (const [a, b] of against) {
          const cmp = compare(`${a} ÷ ${b}`, find(a, w, maxLevel), find(b, w, maxLevel));
          if (cmp) comparisons.push(cmp);
        }
      }
      await down(g);
      if (d) await down(d);
    };
    if (o.compareMetrics) await variant('metrics-off', { metrics: 'off' }, ['mix']);
    // etcd fsyncs every commit by default: next to --sync full, kvstore does too.
    if (o.compareSync) await variant('sync-full', { sync: 'full' }, ['put', 'mix'], !!etcd);
    await down(gw);
    if (direct) await down(direct);
    if (etcd) await down(etcd);
    if (bare) await down(bare);

    if (o.migration) {
      // Steady state, then the same load while one worker joins and the mover moves its keys to it.
      const opts = ownOptions('migration');
      const g = await up('gateway', opts);
      const spare = await startSpareWorker(opts, `worker-${o.workers}`);
      // In `running` like every set, so a failure or a signal stops it too.
      const spareSet: ServerSet = { address: `127.0.0.1:${spare.port}`, processes: [spare], stop: () => spare.stop() };
      running.push(spareSet);
      const steady = await phase('gateway', g, g.address, 'mix', maxLevel, o.keys, 'steady state before adding a worker');
      // The worker is added when counting starts, not before the warm-up: a migration shorter than
      // the warm-up was over before the window opened, which then measured a steady 4-worker cluster.
      let migration: Promise<number> | undefined;
      const moving = await phase(`gateway/migrating`, { ...g, processes: [...g.processes, spare] }, g.address, 'mix', maxLevel, o.keys, 'while a worker is added', () => {
        migration = addWorker(g.address, spare);
        // Awaited after the phase; a failure meanwhile must not end the process as an unhandled rejection.
        migration.catch(() => undefined);
      });
      const finished = await migration!;
      const status = await adminCall(g.address, 'Status', {});
      moving.extra = { ...moving.extra, migrationSeconds: finished, migrationDuringWindow: finished <= moving.result.seconds, keysMoved: status.keys_moved };
      log(`migration took ${finished.toFixed(1)} s of the ${moving.result.seconds.toFixed(1)} s measured and moved ${status.keys_moved} keys`);
      const cmp = compare('gateway/migrating ÷ gateway', moving, steady);
      if (cmp) comparisons.push(cmp);
      await down(spareSet);
      await down(g);
    }

    for (const keys of o.scale ? list(o.scale).map(count) : []) {
      const folder = `scale-${keys}`;
      const g = await up('gateway', ownOptions(folder, { keys }));
      await phase('gateway', g, g.address, 'mix', maxLevel, keys);
      await phase('gateway', g, g.address, 'listkeys', 1, keys);
      await down(g);
      if (o.direct) {
        const d = await up('direct', ownOptions(folder, { keys }));
        await phase('direct', d, d.address, 'mix', maxLevel, keys);
        await phase('direct', d, d.address, 'listkeys', 1, keys);
        await down(d);
      }
      // A million keys are a few hundred MB per copy: not kept until the end of the run.
      rmSync(join(dataDir, folder), { recursive: true, force: true });
    }
  }

  const targets: Target[] = [];
  // A target over phases with failed requests is not met, whatever the ratio: failures are counted as
  // ops, often fast ones (a gateway answering UNAVAILABLE for a stopped worker).
  const target = (name: string, c: Comparison, measured: number, limit: string, ok: boolean): void =>
    void targets.push({ name, measured, limit, met: ok && c.errors === 0, errors: c.errors });
  const mix = comparisons.find((c) => c.variant === 'gateway ÷ direct' && c.workload === 'mix' && c.concurrency === 64);
  if (mix) {
    target('mix c=64: gateway ops/s ÷ direct', mix, mix.opsRatio, '≥ 0.9', mix.opsRatio >= 0.9);
    target('mix c=64: gateway server CPU/op ÷ direct', mix, mix.cpuPerOpRatio, '≤ 1.25', mix.cpuPerOpRatio <= 1.25);
  }
  for (const c of [8, 64]) {
    const m = comparisons.find((x) => x.variant === 'gateway ÷ direct' && x.workload === 'mix' && x.concurrency === c);
    if (m) target(`mix c=${c}: gateway p99 ÷ direct`, m, m.p99Ratio, '≤ 1.25', m.p99Ratio <= 1.25);
  }
  const vsEtcd = comparisons.find((c) => c.variant === 'gateway ÷ etcd' && c.workload === 'mix' && c.concurrency === 64);
  if (vsEtcd) target('mix c=64: gateway server CPU/op ÷ etcd', vsEtcd, vsEtcd.cpuPerOpRatio, '≤ 0.6', vsEtcd.cpuPerOpRatio <= 0.6);
  const cpuList = cpus();
  const report: Report = {
    meta: {
      date: started,
      command: `npm run bench -- ${process.argv.slice(2).join(' ')}`.trim(),
      node: process.version,
      cpus: cpuList.length,
      cpuModel: cpuList[0]?.model ?? 'unknown',
      workers: o.workers,
      keys: o.keys,
      valueSize: o.valueSize,
      threads: o.threads,
      durationS: o.duration,
      warmupS: o.warmup,
      concurrency: levels,
      workloads,
      sync: o.sync,
      metrics: o.metrics,
      address: o.address ?? null,
      ...(etcdRelease
        ? {
            etcd:
              `etcd ${etcdRelease}, one member, its defaults: the write-ahead log is fsynced before a write is answered (one fsync per raft batch). ` +
              (o.sync === 'full'
                ? 'kvstore ran with --sync full: one fsync per commit of a gathered batch, comparable.'
                : 'kvstore ran with --sync normal, which does not fsync every commit (SQLite WAL, synchronous=NORMAL: fsync at checkpoints)' +
                  (o.compareSync ? '; the sync-full rows compare etcd with --sync full, which does.' : '; add --compare-sync for a comparison at equal durability.')),
          }
        : {}),
      ...(o.bare
        ? { bare: 'a grpc-js server with kvstore\'s public API and server options over a Map (bench/bare-server.ts): what serving the call costs before any validation, routing or storage.' }
        : {}),
      loadAvgStart: loadStart,
      loadAvgEnd: loadavg(),
    },
    phases,
    idle,
    comparisons,
    targets,
  };
  const files = writeReport(o.out, report);
  process.stdout.write(toMarkdown(report));
  log(`report: ${files.json}\n        ${files.md}`);
}

main()
  .then(cleanup)
  .catch(async (err: unknown) => {
    log(`bench failed: ${(err as Error).stack ?? String(err)}`);
    await cleanup();
    process.exit(1);
  });
