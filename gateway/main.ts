#!/usr/bin/env node
// Gateway entry point: serves the public KeyValueStore API and routes each key to its worker.
import * as grpc from '@grpc/grpc-js';
import { ReflectionService } from '@grpc/reflection';
import { Command, Option } from 'commander';
import { adminTokenFileOption, createAdminAuth, readAdminToken } from '../shared/auth.js';
import { addHealth, bindServer, drainServer, setAllHealth } from '../shared/grpc-server.js';
import { publicServerOptions, serverKeepalive } from '../shared/grpc-options.js';
import { startHttpEndpoints } from '../shared/http-server.js';
import { handleStops } from '../shared/lifecycle.js';
import { createLogger } from '../shared/logger.js';
import { createRegistry } from '../shared/metrics.js';
import { adminApi, healthDefinition, publicApi } from '../shared/proto.js';
import { DEFAULTS, ENV, defaultBackupDir, gatewayTuningOptions, intOption, keepaliveOption, logLevelOption, metricsOption, shutdownGraceOption } from '../shared/settings.js';
import { internalTlsOptions, publicServerTls, publicTlsOptions, workerChannelTls, type InternalTlsSettings, type PublicTlsSettings } from '../shared/tls.js';
import { BackupCoordinator } from './backup.js';
import { Cluster } from './cluster.js';
import { adminService } from './admin-service.js';
import { kvService } from './kv-service.js';
import { parseMembers, type Member } from './members.js';
import { strictService } from './strict-decode.js';
import { createGatewayMetrics } from './metrics.js';
import { Mover } from './mover.js';

const PUBLIC_SERVICE = 'kvstore.KeyValueStore';

const program = new Command('kv-gateway')
  .description('kvstore gateway: serves the public KeyValueStore gRPC API and routes each key to the worker that owns it')
  .addOption(new Option('--host <host>', 'address to listen on').env(ENV.host).default(DEFAULTS.host))
  .addOption(intOption('--port <port>', 'gRPC port (0 = pick a free one)', ENV.port, DEFAULTS.gatewayPort))
  .addOption(intOption('--metrics-port <port>', 'HTTP port for /metrics, /healthz, /readyz (0 = pick a free one)', ENV.metricsPort, DEFAULTS.gatewayMetricsPort))
  .addOption(
    new Option('--members <list>', 'required: workers on the ring, "name=host:port,..." or bare names with --worker-address-template')
      .env(ENV.members)
      .makeOptionMandatory(),
  )
  .addOption(new Option('--worker-address-template <tmpl>', 'address for a bare member name, e.g. "{name}.kv-worker:50052"').env(ENV.workerAddressTemplate))
  .addOption(new Option('--data-dir <dir>', 'data folder (the gateway only writes backup manifests under it)').env(ENV.dataDir).default(DEFAULTS.dataDir))
  .addOption(new Option('--backup-dir <dir>', 'where backup sets go (default: <data-dir>/backups)').env(ENV.backupDir))
  .addOption(metricsOption())
  .addOption(logLevelOption())
  .addOption(adminTokenFileOption())
  .showHelpAfterError('(--help lists every setting)');
for (const o of [...gatewayTuningOptions(), shutdownGraceOption(), keepaliveOption(), ...publicTlsOptions(), ...internalTlsOptions('gateway')]) program.addOption(o);

program.parse();
const opts = program.opts<{
  host: string;
  port: number;
  metricsPort: number;
  members: string;
  workerAddressTemplate?: string;
  requestTimeoutMs: number;
  maxInflight: number;
  fanoutTimeoutMs: number;
  backupTimeoutMs: number;
  dataDir: string;
  backupDir?: string;
  backupKeep: number;
  shutdownGraceMs: number;
  keepaliveMs: number;
  migrationRate: number;
  metrics: 'on' | 'off';
  logLevel: string;
  adminTokenFile?: string;
} & PublicTlsSettings & InternalTlsSettings>();

/**
 * The member list, checked like every other setting: a bad one is a usage error that names the flag
 * or the env var it came from (and the worker), not a fatal log line with a stack trace.
 */
function membersOrUsageError(): Member[] {
  try {
    return parseMembers(opts.members, opts.workerAddressTemplate);
  } catch (err) {
    const given = program.getOptionValueSource('members') === 'env' ? `value '${opts.members}' from env '${ENV.members}'` : `argument '${opts.members}'`;
    return program.error(`error: option '--members <list>' ${given} is invalid. ${(err as Error).message}`, { code: 'commander.invalidArgument' });
  }
}
const members = membersOrUsageError();

const log = createLogger('gateway', opts.logLevel);
const lifecycle = handleStops(log);

async function main(): Promise<void> {
  const publicTls = publicServerTls(opts);
  const internalTls = workerChannelTls(opts);
  // Any TLS configured means security is on; then admin RPCs need a token (shared/auth.ts).
  const securityOn = publicTls.summary.mode !== 'off' || internalTls.summary.mode !== 'off';
  const adminAuth = createAdminAuth({ token: readAdminToken(opts.adminTokenFile), securityOn });
  const registry = createRegistry({});
  const metrics = createGatewayMetrics(registry);
  const cluster = new Cluster(
    members,
    {
      link: { timeoutMs: opts.requestTimeoutMs, maxInflight: opts.maxInflight, credentials: internalTls.credentials, channelOptions: internalTls.channelOptions, tls: internalTls.socket },
      controlTimeoutMs: Math.min(opts.requestTimeoutMs, 5000),
    },
    log,
    metrics,
  );
  const mover = new Mover(cluster, { rate: opts.migrationRate, chunk: 500, scanTimeoutMs: opts.fanoutTimeoutMs }, log, registry);
  const backupDir = opts.backupDir ?? defaultBackupDir(opts.dataDir);
  const backups = new BackupCoordinator(cluster, { backupDir, timeoutMs: opts.backupTimeoutMs, keep: opts.backupKeep }, log, metrics.backups);

  let stopping = false;
  const server = new grpc.Server({ ...publicServerOptions, ...serverKeepalive(opts.keepaliveMs) });
  const api = publicApi();
  server.addService(strictService(api.KeyValueStore.service), kvService({ cluster, backups, metrics, log, fanoutTimeoutMs: opts.fanoutTimeoutMs, metricsOn: opts.metrics === 'on' }));
  server.addService(
    adminApi().Admin.service,
    adminService({
      cluster,
      mover,
      log,
      statusTimeoutMs: 3000,
      addressTemplate: opts.workerAddressTemplate,
      authorize: (md) => adminAuth.check(md),
      onOutcome: (rpc, code) => metrics.adminCall(rpc, code),
    }),
  );
  const health = addHealth(server, [PUBLIC_SERVICE]);
  // Reflection describes only the definitions it is given: every service this server answers, so
  // `grpcurl ... grpc.health.v1.Health/Check` and the admin RPCs work without proto files too.
  new ReflectionService({ ...api.definition, ...adminApi().definition, ...healthDefinition() }).addToServer(server);
  const port = await bindServer(server, opts.host, opts.port, publicTls.credentials);
  // The public service is SERVING (readiness) only once the membership is known; requests before that
  // get UNAVAILABLE. The overall status "" (the liveness probe) says the process is alive: on a first
  // install the membership needs every seed worker, and a gateway killed for waiting on a worker that
  // is still being scheduled would only come back later.
  health.setStatus(PUBLIC_SERVICE, 'NOT_SERVING');
  let ready = false;
  void cluster.bootstrap().then(() => {
    if (stopping) return;
    ready = true;
    health.setStatus(PUBLIC_SERVICE, 'SERVING');
    log.info({ epoch: cluster.epoch, members: cluster.members.map((m) => m.name) }, 'gateway serving');
    // The supervisor (and tests) treat this as "ready for traffic".
    lifecycle.tellSupervisor({ type: 'listening', name: 'gateway', port, metricsPort: http.port });
  });
  const http = await startHttpEndpoints(registry, opts.host, opts.metricsPort, () => ready);
  log.info(
    {
      port,
      metricsPort: http.port,
      members,
      backupDir,
      backupKeep: opts.backupKeep,
      tls: publicTls.summary,
      internalTls: internalTls.summary,
      adminAuth: adminAuth.mode,
      metrics: opts.metrics,
    },
    'gateway listening',
  );

  const stop = async (signal: string): Promise<void> => {
    if (stopping) return;
    stopping = true;
    ready = false;
    log.info({ signal }, 'gateway draining');
    setAllHealth(health, [PUBLIC_SERVICE], 'NOT_SERVING');
    const how = await drainServer(server, opts.shutdownGraceMs);
    await mover.stop();
    await cluster.close(1000);
    await http.close();
    log.info({ how }, 'gateway stopped');
    process.exit(0);
  };
  lifecycle.serving(stop);
}

main().catch((err: unknown) => {
  log.fatal({ err }, `gateway failed to start: ${(err as Error).message}`);
  process.exit(1);
});
