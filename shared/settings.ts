// Every setting's name, env var and default in one place, so the CLI, the manifests in k8s/ and the
// README cannot drift apart (test/k8s checks the manifests against this table).
import { type Command, InvalidArgumentError, Option } from 'commander';

export const DEFAULTS = {
  gatewayPort: 50051,
  gatewayMetricsPort: 9100,
  workerPort: 50052,
  workerMetricsPort: 9101,
  host: '0.0.0.0',
  dataDir: './data',
  workers: 3,
  requestTimeoutMs: 5000,
  maxInflightPerWorker: 20000,
  backupKeep: 7,
  fanoutTimeoutMs: 60_000,
  backupTimeoutMs: 600_000,
  migrationRate: 5000,
  shutdownGraceMs: 10_000,
  // Redis pings idle clients every 300 s by default (tcp-keepalive); etcd every 2 h.
  keepaliveMs: 300_000,
  sync: 'normal',
  logLevel: 'info',
  metrics: 'on',
} as const;

export const ENV = {
  port: 'KV_PORT',
  host: 'KV_HOST',
  metricsPort: 'KV_METRICS_PORT',
  dataDir: 'KV_DATA_DIR',
  backupDir: 'KV_BACKUP_DIR',
  backupKeep: 'KV_BACKUP_KEEP',
  workers: 'KV_WORKERS',
  workerBasePort: 'KV_WORKER_BASE_PORT',
  members: 'KV_MEMBERS',
  workerAddressTemplate: 'KV_WORKER_ADDRESS_TEMPLATE',
  name: 'KV_NAME',
  requestTimeoutMs: 'KV_REQUEST_TIMEOUT_MS',
  maxInflight: 'KV_MAX_INFLIGHT',
  fanoutTimeoutMs: 'KV_FANOUT_TIMEOUT_MS',
  backupTimeoutMs: 'KV_BACKUP_TIMEOUT_MS',
  migrationRate: 'KV_MIGRATION_RATE',
  shutdownGraceMs: 'KV_SHUTDOWN_GRACE_MS',
  keepaliveMs: 'KV_KEEPALIVE_MS',
  maxDbPages: 'KV_MAX_DB_PAGES',
  sync: 'KV_SYNC',
  logLevel: 'KV_LOG_LEVEL',
  // Security (docs/security.md). All off by default.
  tlsCert: 'KV_TLS_CERT',
  tlsKey: 'KV_TLS_KEY',
  tlsClientCa: 'KV_TLS_CLIENT_CA',
  internalTlsCa: 'KV_INTERNAL_TLS_CA',
  internalTlsCert: 'KV_INTERNAL_TLS_CERT',
  internalTlsKey: 'KV_INTERNAL_TLS_KEY',
  internalTlsServerName: 'KV_INTERNAL_TLS_SERVER_NAME',
  // The token itself has no flag: command lines are visible to every user through ps.
  adminToken: 'KV_ADMIN_TOKEN',
  adminTokenFile: 'KV_ADMIN_TOKEN_FILE',
  metrics: 'KV_METRICS',
  directApi: 'KV_DIRECT_API',
} as const;

/**
 * Range of a duration in ms that ends up in a timer: Node fires a setTimeout above 2^31-1 ms at once,
 * and a 0 deadline fails everything, so both are refused at start-up instead.
 */
export const TIMER_MS = { min: 1, max: 2_147_483_647 } as const;

export function intOption(flags: string, description: string, env: string, def?: number, range: { min?: number; max?: number } = {}): Option {
  // A <port> flag is checked against the port range here, so a typo is a usage error naming the flag
  // (or the env var), not a stack trace from listen() later.
  const max = range.max ?? (flags.includes('<port>') ? 65_535 : undefined);
  const opt = new Option(flags, description).env(env).argParser(intArg(range.min ?? 0, max));
  return def === undefined ? opt : opt.default(def);
}

/**
 * The parser of an integer flag value from `min` to `max`: a bad value is commander's usage error,
 * which names the flag or env var (kvctl exits 2 for it, the servers 1), never a plain Error.
 */
export function intArg(min = 0, max = Number.MAX_SAFE_INTEGER): (raw: string) => number {
  const expected =
    max !== Number.MAX_SAFE_INTEGER ? `expected ${min} to ${max}` : min === 0 ? 'expected a non-negative integer' : min === 1 ? 'expected a positive integer' : `expected an integer of at least ${min}`;
  return (raw: string) => {
    const n = Number(raw);
    if (raw.trim() === '' || !Number.isInteger(n) || n < min || n > max) throw new InvalidArgumentError(expected);
    return n;
  };
}

const SWITCH_WORDS: Record<string, boolean> = { true: true, '1': true, yes: true, on: true, false: false, '0': false, no: false, off: false };

/**
 * Adds an on/off flag (`--tls`) whose env var says on or off. commander takes any value of a flag's
 * env var as "on", so KV_DIRECT_API=false turned the direct API on; here the value is read as
 * true/false, 1/0, yes/no or on/off (empty: unset, so off), and anything else is a usage error
 * naming the variable.
 */
export function addSwitch(cmd: Command, option: Option): Command {
  if (!option.envVar || !option.isBoolean()) throw new Error(`${option.flags}: a switch is a flag without a value, with an env var`);
  const env = option.envVar;
  cmd.addOption(option.default(false));
  // commander emits this only when the flag is not on the command line; its own handler, registered
  // by addOption, has just set the value to true, and this one runs after it.
  cmd.on(`optionEnv:${option.name()}`, () => {
    const raw = process.env[env] ?? '';
    // Set but empty (a blank ConfigMap value, `KV_DIRECT_API= cmd`) reads as unset, not as an error.
    if (raw.trim() === '') {
      cmd.setOptionValueWithSource(option.attributeName(), false, 'default');
      return;
    }
    const on = SWITCH_WORDS[raw.trim().toLowerCase()];
    if (on === undefined) {
      cmd.error(`error: option '${option.flags}' value '${raw}' from env '${env}' is invalid. expected true/false, 1/0, yes/no or on/off`, { code: 'commander.invalidArgument' });
    }
    cmd.setOptionValueWithSource(option.attributeName(), on, 'env');
  });
  return cmd;
}

/**
 * The gateway's settings that `npm start` passes on to it (and lists in its own --help), defined once
 * here so the two cannot drift apart.
 */
export function gatewayTuningOptions(): Option[] {
  return [
    intOption('--request-timeout-ms <ms>', 'deadline for each request to a worker', ENV.requestTimeoutMs, DEFAULTS.requestTimeoutMs, TIMER_MS),
    intOption('--max-inflight <n>', 'requests that may wait on one worker before new ones get RESOURCE_EXHAUSTED', ENV.maxInflight, DEFAULTS.maxInflightPerWorker, { min: 1 }),
    intOption('--fanout-timeout-ms <ms>', "deadline for each worker's part of ListKeys", ENV.fanoutTimeoutMs, DEFAULTS.fanoutTimeoutMs, TIMER_MS),
    intOption('--backup-timeout-ms <ms>', "deadline for each worker's snapshot", ENV.backupTimeoutMs, DEFAULTS.backupTimeoutMs, TIMER_MS),
    intOption('--migration-rate <keys/s>', 'most keys per second the mover copies during a membership change', ENV.migrationRate, DEFAULTS.migrationRate, { min: 1 }),
    intOption(
      '--backup-keep <n>',
      'complete backup sets to keep; older ones are deleted after each successful backup (at least 1: the newest good one is never deleted)',
      ENV.backupKeep,
      DEFAULTS.backupKeep,
      { min: 1 },
    ),
  ];
}

/** The worker's settings that `npm start` passes on to each worker. */
export function workerTuningOptions(): Option[] {
  return [intOption('--max-db-pages <pages>', 'cap on database pages (PRAGMA max_page_count); 0 = unlimited', ENV.maxDbPages, 0)];
}

export function shutdownGraceOption(): Option {
  return intOption('--shutdown-grace-ms <ms>', 'how long SIGTERM waits for in-flight calls (0 = do not wait)', ENV.shutdownGraceMs, DEFAULTS.shutdownGraceMs, { max: TIMER_MS.max });
}

/**
 * A client that vanished without closing its connection (a host gone, a pod deleted behind a NAT)
 * leaves an HTTP/2 session that grpc-js keeps for good, since it never pings clients by default;
 * TCP alone only notices when the server next writes. The server pings instead.
 */
export function keepaliveOption(): Option {
  const parse = intArg(0, TIMER_MS.max);
  return new Option(
    '--keepalive-ms <ms>',
    'how often the gRPC server pings each client connection; one that does not answer within the same time (at most 20 s) is closed (0 = never ping; else at least 1000)',
  )
    .env(ENV.keepaliveMs)
    .default(DEFAULTS.keepaliveMs)
    .argParser((raw) => {
      // Below a second, a client's event loop stalling for that long (a GC, a busy turn) would cost it
      // its connection; grpc-go refuses keepalive times under 1 s for the same reason.
      const expected = 'expected 0 (never ping) or 1000 to 2147483647';
      let n: number;
      try {
        n = parse(raw);
      } catch {
        throw new InvalidArgumentError(expected);
      }
      if (n !== 0 && n < 1000) throw new InvalidArgumentError(expected);
      return n;
    });
}

export function logLevelOption(): Option {
  return new Option('--log-level <level>', 'log level')
    .env(ENV.logLevel)
    .choices(['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'])
    .default(DEFAULTS.logLevel);
}

export function defaultBackupDir(dataDir: string): string {
  return `${dataDir.replace(/\/+$/, '')}/backups`;
}

/**
 * Per-request metrics (request counters, latency histograms, per-worker routing counts) cost a few
 * microseconds per call on the hot path; `off` skips them while /metrics keeps serving the process,
 * up/down and size series. Measured by `npm run bench` (docs/performance.md).
 */
export function metricsOption(): Option {
  return new Option('--metrics <on|off>', 'collect per-request metrics (off: only process, up/down and size series)')
    .env(ENV.metrics)
    .choices(['on', 'off'])
    .default(DEFAULTS.metrics);
}
