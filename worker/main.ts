#!/usr/bin/env node
// Worker entry point: owns one SQLite database and serves the internal Worker protocol to gateways.
import { hostname } from 'node:os';
import { join } from 'node:path';
import * as grpc from '@grpc/grpc-js';
import { Command, Option } from 'commander';
import { ensureDir } from '../shared/data-dir.js';
import { addHealth, drainServer, setAllHealth } from '../shared/grpc-server.js';
import { serverKeepalive, workerServerOptions } from '../shared/grpc-options.js';
import { startHttpEndpoints } from '../shared/http-server.js';
import { handleStops } from '../shared/lifecycle.js';
import { LogLimiter } from '../shared/log-limiter.js';
import { createLogger } from '../shared/logger.js';
import { createRegistry } from '../shared/metrics.js';
import { publicApi, workerApi } from '../shared/proto.js';
import { DEFAULTS, ENV, addSwitch, defaultBackupDir, intOption, keepaliveOption, logLevelOption, metricsOption, shutdownGraceOption, workerTuningOptions } from '../shared/settings.js';
import { internalTlsOptions, workerServerTls, type InternalTlsSettings } from '../shared/tls.js';
import { directApi } from './direct-api.js';
import { listenWorker } from './listener.js';
import { createWorkerMetrics } from './metrics.js';
import { WorkerMembership } from './membership.js';
import { WorkerService } from './service.js';
import { Snapshotter } from './snapshot.js';
import { Store, assertNotInUse, holdInstanceLock, type SyncMode } from './store.js';

const WORKER_SERVICE = 'kvstore.internal.Worker';
const PUBLIC_SERVICE = 'kvstore.KeyValueStore';
const NAME_RULE = /^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$/;

const program = new Command('kv-worker')
  .description('kvstore worker: owns one SQLite database and serves the gateway over the internal protocol')
  .addOption(new Option('--name <name>', 'stable member name on the ring (in Kubernetes: the pod name)').env(ENV.name).default(hostname()))
  .addOption(new Option('--host <host>', 'address to listen on').env(ENV.host).default(DEFAULTS.host))
  .addOption(intOption('--port <port>', 'gRPC port (0 = pick a free one)', ENV.port, DEFAULTS.workerPort))
  .addOption(intOption('--metrics-port <port>', 'HTTP port for /metrics, /healthz, /readyz (0 = pick a free one)', ENV.metricsPort, DEFAULTS.workerMetricsPort))
  .addOption(new Option('--data-dir <dir>', 'folder for this worker\'s database file').env(ENV.dataDir).default(DEFAULTS.dataDir))
  .addOption(new Option('--backup-dir <dir>', 'folder for snapshots (default: <data-dir>/backups)').env(ENV.backupDir))
  .addOption(new Option('--sync <mode>', 'durability: normal = survives process crash (WAL, fsync at checkpoint); full = fsync every commit (group commit per batch)').env(ENV.sync).choices(['normal', 'full']).default(DEFAULTS.sync))
  .addOption(metricsOption())
  .addOption(logLevelOption())
  .showHelpAfterError('(--help lists every setting)');
addSwitch(
  program,
  new Option('--direct-api', 'also serve the public KeyValueStore API on the gRPC port, without a gateway: for benchmarking (npm run bench) and single-node use only; with several workers, clients must use the gateway').env(ENV.directApi),
);
for (const o of [...workerTuningOptions(), shutdownGraceOption(), keepaliveOption(), ...internalTlsOptions('worker')]) program.addOption(o);

program.parse();
const opts = program.opts<{
  name: string;
  host: string;
  port: number;
  metricsPort: number;
  dataDir: string;
  backupDir?: string;
  sync: SyncMode;
  maxDbPages: number;
  shutdownGraceMs: number;
  keepaliveMs: number;
  directApi: boolean;
  metrics: 'on' | 'off';
  logLevel: string;
} & InternalTlsSettings>();

const log = createLogger('worker', opts.logLevel, { worker: opts.name });
const lifecycle = handleStops(log);

async function main(): Promise<void> {
  if (!NAME_RULE.test(opts.name)) {
    throw new Error(`--name must be a DNS label (lowercase letters, digits, '-'), got ${JSON.stringify(opts.name)}`);
  }
  // Before touching the data folder: a bad certificate setting must not leave anything behind.
  const tls = workerServerTls(opts);
  ensureDir(opts.dataDir, 'data directory');
  const dbFile = join(opts.dataDir, `${opts.name}.sqlite`);
  const inUse = (code: string): string =>
    `database ${dbFile} is in use by another process (${code}): another worker named ${opts.name} is running on this data directory (a second npm start with the same --data-dir?), or kvctl restore is writing it; stop it, or give this worker its own --data-dir`;
  // Held until the database is closed, or the process ends however it ends; the probe also catches a
  // process that is not a worker (an sqlite3 shell, say) with the database open.
  const instanceLock = holdInstanceLock(dbFile, inUse);
  assertNotInUse(dbFile, inUse);
  const store = new Store(dbFile, { sync: opts.sync, maxPages: opts.maxDbPages });
  const backupDir = opts.backupDir ?? defaultBackupDir(opts.dataDir);
  const snapshots = new Snapshotter(dbFile, backupDir, opts.name);

  const registry = createRegistry({ worker: opts.name });
  const metrics = createWorkerMetrics(registry, store, { dataDir: opts.dataDir, backupDir, name: opts.name });
  // Every SQLite error is counted; the log gets one line per error, but at most one a second: a full
  // disk fails every write, and thousands of identical lines a second would bury everything else.
  const sqliteLog = new LogLimiter(1000);
  store.onSqliteError = (err) => {
    const code = (err as { code?: string }).code ?? 'unknown';
    metrics.sqliteErrors.inc({ sqlite_code: code });
    const suppressed = sqliteLog.take();
    if (suppressed !== undefined) log.error({ err, sqliteCode: code, suppressedSinceLast: suppressed }, 'sqlite error');
  };
  store.onOp = metrics.observeOp;

  const membership = new WorkerMembership(store, opts.name);
  const metricsOn = opts.metrics === 'on';
  const service = new WorkerService(opts.name, store, snapshots, metrics, log, membership, metricsOn);
  const server = new grpc.Server({ ...workerServerOptions, ...serverKeepalive(opts.keepaliveMs) });
  server.addService(workerApi().Worker.service, service.implementation());
  const services = [WORKER_SERVICE];
  if (opts.directApi) {
    server.addService(
      publicApi().KeyValueStore.service,
      directApi({ name: opts.name, store, snapshots, log, onBatch: metricsOn ? (ops, results, s) => service.recordBatch(ops, results, s) : undefined }),
    );
    services.push(PUBLIC_SERVICE);
  }
  const health = addHealth(server, services);
  const listener = await listenWorker({ host: opts.host, port: opts.port, grpcServer: server, tls: tls.socket, onExchange: (socket, head) => service.serveSocket(socket, head), log });
  const port = listener.port;
  let ready = true;
  const http = await startHttpEndpoints(registry, opts.host, opts.metricsPort, () => ready);
  log.info({ port, metricsPort: http.port, db: dbFile, keys: store.keys, sync: opts.sync, backupDir, tls: tls.summary, directApi: opts.directApi, metrics: opts.metrics }, 'worker listening');
  // The supervisor (cli/start) learns the bound ports from this message when it forked us.
  lifecycle.tellSupervisor({ type: 'listening', name: opts.name, port, metricsPort: http.port });

  let stopping = false;
  const stop = async (signal: string): Promise<void> => {
    if (stopping) return;
    stopping = true;
    ready = false;
    log.info({ signal }, 'worker draining');
    setAllHealth(health, services, 'NOT_SERVING');
    listener.stopAccepting();
    const exchangesClosed = service.drain(opts.shutdownGraceMs);
    const how = await drainServer(server, opts.shutdownGraceMs);
    // Exiting discards answers still in an exchange socket's write buffer, for batches already stored.
    await exchangesClosed;
    await snapshots.close();
    store.close();
    instanceLock.release();
    await http.close();
    log.info({ how }, 'worker stopped');
    process.exit(0);
  };
  lifecycle.serving(stop);
}

main().catch((err: unknown) => {
  log.fatal({ err }, `worker failed to start: ${(err as Error).message}`);
  process.exit(1);
});
