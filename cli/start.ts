#!/usr/bin/env node
// `npm start`: the embedded store on one machine (a gateway and KV_WORKERS workers as child processes).
import { Command, Option } from 'commander';
import { adminTokenFileOption } from '../shared/auth.js';
import { createLogger } from '../shared/logger.js';
import { DEFAULTS, ENV, gatewayTuningOptions, intOption, keepaliveOption, logLevelOption, metricsOption, shutdownGraceOption, workerTuningOptions } from '../shared/settings.js';
import { internalTlsOptions, publicTlsOptions, type InternalTlsSettings, type PublicTlsSettings } from '../shared/tls.js';
import { Supervised, scriptPath, stopTimeoutFor } from './supervisor.js';

const program = new Command('kvstore')
  .description('Start the embedded kvstore: a gateway and N worker processes on this machine, restarted if they die')
  .addOption(new Option('--host <host>', 'address the gateway listens on (workers always listen on 127.0.0.1)').env(ENV.host).default('127.0.0.1'))
  .addOption(intOption('--port <port>', 'gateway gRPC port; workers use the next ones (0 = pick a free one, and free ones for the workers)', ENV.port, DEFAULTS.gatewayPort))
  .addOption(intOption('--metrics-port <port>', 'gateway /metrics port; workers use the next ones (0 = free ports)', ENV.metricsPort, DEFAULTS.gatewayMetricsPort))
  .addOption(intOption('--workers <n>', 'number of worker processes (1 to 64)', ENV.workers, DEFAULTS.workers, { min: 1, max: 64 }))
  .addOption(intOption('--worker-base-port <port>', 'first worker gRPC port (default: gateway port + 1; 0 = free ports)', ENV.workerBasePort))
  .addOption(new Option('--data-dir <dir>', 'where the workers keep their databases').env(ENV.dataDir).default(DEFAULTS.dataDir))
  .addOption(new Option('--backup-dir <dir>', 'where backup sets go (default: <data-dir>/backups)').env(ENV.backupDir))
  .addOption(new Option('--sync <mode>', 'worker durability: normal or full (fsync every commit)').env(ENV.sync).choices(['normal', 'full']).default(DEFAULTS.sync))
  .addOption(logLevelOption())
  .addOption(adminTokenFileOption())
  .showHelpAfterError('(--help lists every setting)');
// The gateway's and the workers' own settings, passed on to them when given here (flag or env var).
const toGateway = gatewayTuningOptions();
const toWorkers = workerTuningOptions();
const toBoth = [shutdownGraceOption(), keepaliveOption(), metricsOption()];
// Embedded, one internal certificate serves both sides: it needs serverAuth and clientAuth usages and
// a name the gateway can check (IP 127.0.0.1, or --internal-tls-server-name); docs/security.md.
for (const o of [...toGateway, ...toWorkers, ...toBoth, ...publicTlsOptions(), ...internalTlsOptions('embedded')]) program.addOption(o);

program.parse();
const opts = program.opts<{
  host: string;
  port: number;
  metricsPort: number;
  workers: number;
  workerBasePort?: number;
  dataDir: string;
  backupDir?: string;
  sync: string;
  logLevel: string;
  adminTokenFile?: string;
  shutdownGraceMs: number;
} & PublicTlsSettings & InternalTlsSettings>();
// The workers take the ports after the gateway's, unless told where to start (0: each picks a free one).
const basePort = opts.workerBasePort ?? (opts.port === 0 ? 0 : opts.port + 1);
checkPortRanges();
const log = createLogger('supervisor', opts.logLevel);
// A child drains for up to the grace, then closes its links, database and HTTP server.
const stopTimeoutMs = stopTimeoutFor(opts.shutdownGraceMs);

/** `--flag value` for each of `options` set on this command line or by its env var; defaults stay the child's. */
function passOn(options: Option[]): string[] {
  return options.flatMap((o) => {
    const key = o.attributeName();
    return program.getOptionValueSource(key) === 'default' ? [] : [o.long!, String(program.getOptionValue(key))];
  });
}

/**
 * The workers take the ports after the gateway's: --port 65535 used to start, and then a worker died
 * on port 65536, which nobody had typed. Said up front, as a usage error.
 */
function checkPortRanges(): void {
  const last = opts.workers - 1;
  if (basePort !== 0 && basePort + last > 65_535) {
    const from = opts.workerBasePort === undefined ? `--port ${opts.port} + 1` : `--worker-base-port`;
    program.error(`error: ${opts.workers} workers need gRPC ports ${basePort} to ${basePort + last} (from ${from}), past 65535: choose a lower --port or --worker-base-port`);
  }
  if (opts.metricsPort !== 0 && opts.metricsPort + 1 + last > 65_535) {
    program.error(`error: ${opts.workers} workers need metrics ports ${opts.metricsPort + 1} to ${opts.metricsPort + 1 + last} (after --metrics-port ${opts.metricsPort}), past 65535: choose a lower --metrics-port`);
  }
}

/** Every child created so far, workers first; the gateway once it exists. */
const started: Supervised[] = [];
let gateway: Supervised | undefined;
let stopping = false;

/**
 * The one way out, for a signal and for a failed start-up alike; whichever comes first decides the
 * exit code (a signal: 0; a failure: 1). Gateway first: it drains client calls while the workers can
 * still answer them. During start-up it stops whatever has started so far, and start-up goes no
 * further (main checks `stopping`).
 */
const shutdown = async (exitCode: number, why: { signal: string } | { err: unknown }): Promise<void> => {
  if (stopping) return;
  stopping = true;
  if ('err' in why) log.fatal({ err: why.err }, `failed to start: ${(why.err as Error).message}`);
  else log.info(why, 'stopping the store');
  for (const c of started) c.hold();
  if (gateway) await gateway.stop();
  await Promise.all(started.filter((c) => c !== gateway).map((c) => c.stop()));
  log.info('store stopped');
  process.exit(exitCode);
};
// SIGHUP: the terminal or SSH session closed. The children are in their own process groups and
// would otherwise stop all at once, on the IPC channel closing, instead of in order.
for (const signal of ['SIGINT', 'SIGTERM', 'SIGHUP'] as const) process.on(signal, () => void shutdown(0, { signal }));

async function main(): Promise<void> {
  const common = ['--data-dir', opts.dataDir, '--log-level', opts.logLevel, ...(opts.backupDir ? ['--backup-dir', opts.backupDir] : []), ...passOn(toBoth)];
  // Children get file paths, never secrets, on their command lines (ps shows them); KV_ADMIN_TOKEN
  // reaches the gateway through the inherited environment.
  const flag = (name: string, value: string | undefined): string[] => (value ? [name, value] : []);
  const internalTls = [
    ...flag('--internal-tls-ca', opts.internalTlsCa),
    ...flag('--internal-tls-cert', opts.internalTlsCert),
    ...flag('--internal-tls-key', opts.internalTlsKey),
  ];
  const gatewaySecurity = [
    ...flag('--tls-cert', opts.tlsCert),
    ...flag('--tls-key', opts.tlsKey),
    ...flag('--tls-client-ca', opts.tlsClientCa),
    ...internalTls,
    ...flag('--internal-tls-server-name', opts.internalTlsServerName),
    ...flag('--admin-token-file', opts.adminTokenFile),
  ];
  const workers = Array.from({ length: opts.workers }, (_, i) => {
    const name = `worker-${i}`;
    const port = basePort === 0 ? 0 : basePort + i;
    const metricsPort = opts.metricsPort === 0 ? 0 : opts.metricsPort + 1 + i;
    const args = ['--name', name, '--host', '127.0.0.1', '--port', String(port), '--metrics-port', String(metricsPort), '--sync', opts.sync, ...common, ...passOn(toWorkers), ...internalTls];
    // The admin token is the gateway's alone: a worker never checks it, so it does not get a copy.
    const proc = new Supervised({ name, script: scriptPath('../worker/main.js'), args, stopTimeoutMs, withoutEnv: [ENV.adminToken] }, log);
    started.push(proc);
    return { name, args, proc };
  });
  const listening = await Promise.all(workers.map((w) => w.proc.start()));
  if (stopping) return;
  // A restarted worker must come back on the same ports, which may have been picked at random.
  workers.forEach((w, i) => {
    const l = listening[i];
    w.proc.pin(w.args.map((a, j) => (w.args[j - 1] === '--port' ? String(l.port) : w.args[j - 1] === '--metrics-port' ? String(l.metricsPort) : a)));
  });
  const members = listening.map((l) => `${l.name}=127.0.0.1:${l.port}`).join(',');
  const gatewayArgs = ['--host', opts.host, '--port', String(opts.port), '--metrics-port', String(opts.metricsPort), '--members', members, ...common, ...passOn(toGateway), ...gatewaySecurity];
  gateway = new Supervised({ name: 'gateway', script: scriptPath('../gateway/main.js'), args: gatewayArgs, stopTimeoutMs }, log);
  started.push(gateway);
  const g = await gateway.start();
  if (stopping) return;
  gateway.pin(gatewayArgs.map((a, j) => (gatewayArgs[j - 1] === '--port' ? String(g.port) : gatewayArgs[j - 1] === '--metrics-port' ? String(g.metricsPort) : a)));
  log.info(
    { port: g.port, metricsPort: g.metricsPort, workers: listening.map((l) => ({ name: l.name, port: l.port, metricsPort: l.metricsPort })), dataDir: opts.dataDir, stopTimeoutMs },
    `kvstore ready: gRPC on ${opts.host}:${g.port}, metrics on http://${opts.host}:${g.metricsPort}/metrics`,
  );
  process.send?.({ type: 'listening', name: 'kvstore', port: g.port, metricsPort: g.metricsPort });
}

// Stopped during start-up, a child stopped before it was listening is the stop, not a failure:
// shutdown() ignores a second caller.
main().catch((err: unknown) => shutdown(1, { err }));
