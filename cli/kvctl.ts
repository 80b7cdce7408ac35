#!/usr/bin/env node
// kvctl: the command-line client of the public API.
import * as grpc from '@grpc/grpc-js';
import { existsSync, readFileSync } from 'node:fs';
import { Command, Option } from 'commander';
import { adminMetadata } from '../shared/auth.js';
import { KvError, isServiceError, toServiceError } from '../shared/errors.js';
import { publicClientOptions } from '../shared/grpc-options.js';
import { listSets } from '../shared/backup-sets.js';
import { adminApi, publicApi, type ClusterStatus } from '../shared/proto.js';
import { DEFAULTS, ENV, addSwitch, defaultBackupDir, intArg, intOption } from '../shared/settings.js';
import { clientCredentials } from '../shared/tls.js';
import { checkKey, checkValue } from '../shared/validation.js';
import { EXIT, exitCodeFor } from './exit-codes.js';
import { resolveSetDir, restore, verifySet } from './restore.js';

type Cb = (err: grpc.ServiceError | null, res?: Record<string, unknown>) => void;

// `kvctl list | head -1`: the reader took what it wanted and closed the pipe. That is not kvctl's
// failure, so it stops quietly, as a script under `set -o pipefail` needs (a C tool would die of
// SIGPIPE, which Node ignores, and print nothing either): with 0, unless the command had already
// failed (`kvctl backup | true` after a failed backup must still say so). Any other stdout error
// is a failure.
process.stdout.on('error', (err: NodeJS.ErrnoException) => {
  if (err.code === 'EPIPE') process.exit(process.exitCode ?? EXIT.OK);
  process.stderr.write(`kvctl: cannot write the output: ${err.message}\n`);
  process.exit(EXIT.FAILED);
});

interface Globals {
  address: string;
  timeout: number;
  json: boolean;
  tls: boolean;
  ca?: string;
  cert?: string;
  key?: string;
  serverName?: string;
  adminToken?: string;
  adminTokenFile?: string;
}

const program = new Command('kvctl')
  .description('Command-line client for kvstore')
  .addOption(new Option('-a, --address <host:port>', 'gateway address').env('KV_ADDRESS').default('127.0.0.1:50051'))
  .addOption(intOption('-t, --timeout <ms>', 'deadline for the call', 'KV_TIMEOUT_MS', 10_000, { min: 1 }))
  .option('--json', 'print results as JSON', false);
// Client env names differ from the gateway's KV_TLS_* so a shell set up to run a gateway does not
// make kvctl present the gateway's server key as a client certificate.
addSwitch(program, new Option('--tls', 'use TLS, trusting the system CAs (implied by --ca, --cert)').env('KV_CLIENT_TLS'))
  .addOption(new Option('--ca <file>', 'PEM CA bundle to verify the gateway with (turns TLS on)').env('KV_CLIENT_CA'))
  .addOption(new Option('--cert <file>', 'PEM client certificate, for a gateway that requires one').env('KV_CLIENT_CERT'))
  .addOption(new Option('--key <file>', 'PEM private key of --cert').env('KV_CLIENT_KEY'))
  .addOption(new Option('--server-name <name>', 'name to check the gateway certificate against, if not the address host').env('KV_CLIENT_SERVER_NAME'))
  .addOption(new Option('--admin-token <token>', 'admin RPC token (prefer the env var or a file: flags show in ps)').env('KV_ADMIN_TOKEN'))
  .addOption(new Option('--admin-token-file <file>', 'file holding the admin RPC token').env('KV_ADMIN_TOKEN_FILE'))
  .showHelpAfterError()
  .addHelpText(
    'after',
    `
Exit codes:
  0  success
  1  failed (internal error, failed backup)
  2  bad input (usage error, INVALID_ARGUMENT)
  3  key not found
  4  store unreachable or too slow (UNAVAILABLE, DEADLINE_EXCEEDED)
  5  store busy or full (RESOURCE_EXHAUSTED)
  6  not allowed: admin token missing or wrong (UNAUTHENTICATED, PERMISSION_DENIED)`,
  )
  .exitOverride((err) => {
    // commander's own exit for --help/--version is 0; every usage error is "bad input".
    process.exit(err.exitCode === 0 ? 0 : EXIT.BAD_INPUT);
  });

function credentials(g: Globals): grpc.ChannelCredentials {
  if (!g.tls && !g.ca && !g.cert && !g.key) return grpc.credentials.createInsecure();
  // A flag combination, so a usage error (2), not the failure (1) clientCredentials' own check gave.
  if (Boolean(g.cert) !== Boolean(g.key)) throw new UsageError('--cert (KV_CLIENT_CERT) and --key (KV_CLIENT_KEY) go together: give both, or neither');
  quietIpServerNameWarning();
  return clientCredentials({ ca: g.ca, cert: g.cert, key: g.key, serverName: g.serverName });
}

/**
 * grpc-js sends the address host as TLS SNI even when it is an IP address, and Node then prints a
 * DEP0123 deprecation warning on every run (grpc-node#1919). Harmless, but it reads like an error
 * in a command-line tool; drop exactly that warning and keep every other.
 */
function quietIpServerNameWarning(): void {
  const emit = process.emitWarning.bind(process) as (...args: unknown[]) => void;
  process.emitWarning = ((...args: unknown[]) => {
    if (args.some((a) => a === 'DEP0123' || (typeof a === 'object' && a !== null && (a as { code?: string }).code === 'DEP0123'))) return;
    emit(...args);
  }) as typeof process.emitWarning;
}

function adminToken(g: Globals): string | undefined {
  if (g.adminToken) return g.adminToken;
  if (!g.adminTokenFile) return undefined;
  try {
    return readFileSync(g.adminTokenFile, 'utf8').trim();
  } catch (err) {
    throw new Error(`--admin-token-file (KV_ADMIN_TOKEN_FILE): cannot read ${g.adminTokenFile}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`, { cause: err });
  }
}

/** The gateway's per-worker snapshot deadline, and a minute more: its manifest is written after the snapshots. */
const BACKUP_DEADLINE_MS = DEFAULTS.backupTimeoutMs + 60_000;

/**
 * A backup's deadline: the general 10 s suits a point call, not the snapshots of a big store, which the
 * gateway gives up to KV_BACKUP_TIMEOUT_MS (600 s) each. With it, kvctl exited 4 ("unreachable or too
 * slow") while the backup went on and succeeded, and a retry was refused as "still running". An
 * explicit --timeout (or KV_TIMEOUT_MS) still wins.
 */
function backupDeadlineMs(): number {
  if (program.getOptionValueSource('timeout') !== 'default') return program.opts<Globals>().timeout;
  return BACKUP_DEADLINE_MS;
}

/** One call to the gateway. Only admin calls carry the admin token: ordinary commands never send it. */
function call(method: string, req: object, service: 'public' | 'admin' = 'public', timeoutMs?: number): Promise<Record<string, unknown>> {
  const g = program.opts<Globals>();
  const Ctor = service === 'admin' ? adminApi().Admin : publicApi().KeyValueStore;
  const client = new Ctor(g.address, credentials(g), publicClientOptions);
  const metadata = service === 'admin' ? adminMetadata(adminToken(g)) : new grpc.Metadata();
  return new Promise((resolve, reject) => {
    const fn = (client as unknown as Record<string, (r: object, m: grpc.Metadata, o: grpc.CallOptions, cb: Cb) => void>)[method].bind(client);
    fn(req, metadata, { deadline: Date.now() + (timeoutMs ?? g.timeout) }, (err, res) => {
      // A channel that never got READY never reached a gateway: the failure is grpc-js's, not the store's.
      const reached = client.getChannel().getConnectivityState(false) === grpc.connectivityState.READY;
      client.close();
      if (err) reject(reached ? err : new Unreached(err, g.address));
      else resolve(res ?? {});
    });
  });
}

function out(human: string, json: object): void {
  process.stdout.write(program.opts<Globals>().json ? `${JSON.stringify(json)}\n` : `${human}\n`);
}

async function readStdin(): Promise<string> {
  const chunks: Buffer[] = [];
  for await (const c of process.stdin) chunks.push(c as Buffer);
  return Buffer.concat(chunks).toString('utf8');
}

program
  .command('put')
  .description('store a value; prints the previous value if there was one (value "-" reads standard input)')
  .argument('<key>')
  .argument('<value>')
  .action(async (key: string, value: string) => {
    const v = value === '-' ? await readStdin() : value;
    const r = await call('Put', { key: checkKey(key), value: checkValue(v) });
    const old = String(r.old_value ?? '');
    out(old === '' ? 'OK' : `OK (previous value: ${old})`, { key, old_value: old });
  });

program
  .command('get')
  .description('print the value of a key')
  .argument('<key>')
  .action(async (key: string) => {
    const r = await call('Get', { key: checkKey(key) });
    out(String(r.value ?? ''), { key, value: r.value });
  });

program
  .command('delete')
  .alias('del')
  .description('remove a key (succeeds if it does not exist)')
  .argument('<key>')
  .action(async (key: string) => {
    await call('Delete', { key: checkKey(key) });
    out('OK', { key, deleted: true });
  });

program
  .command('list')
  .alias('ls')
  .description('list every key, one per line, in byte order')
  .action(async () => {
    const r = await call('ListKeys', {});
    const keys = (r.keys as string[]) ?? [];
    if (program.opts<Globals>().json) out('', { keys });
    else for (const k of keys) process.stdout.write(`${k}\n`);
  });

program
  .command('backup')
  .description(
    `take a backup of every worker; prints the backup id, location, keys and bytes (waits up to ${BACKUP_DEADLINE_MS / 1000} s unless --timeout is given)`,
  )
  .action(async () => {
    const r = await call('Backup', {}, 'public', backupDeadlineMs());
    const json = {
      success: r.success,
      id: r.backup_id,
      location: r.location,
      keys: Number(r.keys ?? 0),
      bytes: Number(r.bytes ?? 0),
      failed_workers: r.failed_workers ?? [],
      message: r.message,
    };
    if (r.success && r.backup_id) {
      out(`backup ${String(r.backup_id)} complete\n  location: ${String(r.location)}\n  keys:     ${json.keys}\n  bytes:    ${json.bytes}`, json);
    } else if (r.success || program.opts<Globals>().json) {
      // An older gateway sends only the message; --json keeps a failure's figures on stdout for scripts.
      out(String(r.message), json);
    } else {
      // A failure's reason goes where every other kvctl failure goes: on stdout, `id=$(kvctl backup)`
      // swallowed it and the terminal showed nothing. It names each failed worker.
      process.stderr.write(`kvctl: ${String(r.message)}\n`);
    }
    if (!r.success) process.exitCode = EXIT.FAILED;
  });

function printStatus(s: ClusterStatus): void {
  if (program.opts<Globals>().json) {
    out('', s);
    return;
  }
  const lines = [
    `epoch ${s.epoch}, ${s.phase}${s.phase === 'migrating' ? ` (from ${s.previous.map((m) => m.name).join(', ')}): ${s.keys_moved} keys moved, ${s.keys_remaining} remaining` : ''}`,
    ...(s.message ? [s.message] : []),
    'WORKER           ROLE      KEYS       EPOCH  ADDRESS',
    ...s.workers.map(
      (w) =>
        `${w.name.padEnd(16)} ${w.role.padEnd(9)} ${(w.reachable ? String(w.keys) : 'down').padEnd(10)} ${String(w.reachable ? w.epoch : '-').padEnd(6)} ${w.address}${w.error ? `  (${w.error})` : ''}`,
    ),
  ];
  process.stdout.write(`${lines.join('\n')}\n`);
}

async function waitStable(timeoutMs: number): Promise<ClusterStatus> {
  const until = Date.now() + timeoutMs;
  for (;;) {
    const s = (await call('Status', {}, 'admin')) as unknown as ClusterStatus;
    if (s.phase === 'stable') return s;
    if (Date.now() > until) throw new WaitTimedOut(`migration still running after ${timeoutMs} ms (--wait-timeout): ${s.keys_remaining} keys remaining; it goes on in the background, see kvctl cluster status`);
    await new Promise((r) => setTimeout(r, 500));
  }
}

// Validated: Number('abc') is NaN, and a NaN deadline is never passed, so --wait waited forever.
const waitTimeoutOption = (): Option => new Option('--wait-timeout <ms>', 'how long --wait waits').default(3_600_000).argParser(intArg(1));

const cluster = program.command('cluster').description('cluster membership: status, add and remove workers (online: keys move while serving)');

cluster
  .command('status')
  .description('members, epoch, migration phase and progress, and each worker\'s keys')
  .action(async () => printStatus((await call('Status', {}, 'admin')) as unknown as ClusterStatus));

cluster
  .command('add')
  .description('add workers (name=host:port ...); their keys move to them online')
  .argument('<members...>')
  .option('--wait', 'wait until the keys have moved')
  .addOption(waitTimeoutOption())
  .action(async (members: string[], o: { wait?: boolean; waitTimeout: number }) => {
    const list = members.map((m) => {
      const eq = m.indexOf('=');
      return eq < 0 ? { name: m, address: '' } : { name: m.slice(0, eq), address: m.slice(eq + 1) };
    });
    printStatus((await call('AddMembers', { members: list }, 'admin')) as unknown as ClusterStatus);
    if (o.wait) printStatus(await waitStable(o.waitTimeout));
  });

cluster
  .command('remove')
  .description('drain workers (by name) onto the others; stop them only once status shows them gone')
  .argument('<names...>')
  .option('--wait', 'wait until they are drained')
  .addOption(waitTimeoutOption())
  .action(async (names: string[], o: { wait?: boolean; waitTimeout: number }) => {
    printStatus((await call('RemoveMembers', { members: names.map((name) => ({ name, address: '' })) }, 'admin')) as unknown as ClusterStatus);
    if (o.wait) printStatus(await waitStable(o.waitTimeout));
  });


// Offline commands: they read the backup and data folders on this machine, no gateway needed.
const dataDirOption = (): Option => new Option('--data-dir <dir>', 'the store\'s data directory').env(ENV.dataDir).default(DEFAULTS.dataDir);
const backupDirOption = (): Option => new Option('--backup-dir <dir>', 'where backup sets are (default: <data-dir>/backups)').env(ENV.backupDir);

function fromPartsOption(): Option {
  return new Option(
    '--from-parts <members>',
    "the set's manifest.json is lost: rebuild it from the workers' part manifests of these members (comma-separated; every one must be there)",
  );
}

program
  .command('backups')
  .description('list the backup sets in the backup folder (offline: reads the manifests)')
  .addOption(dataDirOption())
  .addOption(backupDirOption())
  .action((o: { dataDir: string; backupDir?: string }) => {
    const dir = o.backupDir ?? defaultBackupDir(o.dataDir);
    const sets = listSets(dir);
    const rows = sets.map((s) => ({
      id: s.id,
      state: s.state,
      created_at: s.manifest?.created_at ?? s.failure?.created_at ?? null,
      workers: s.manifest?.workers.length ?? null,
      keys: s.manifest?.total_keys ?? null,
      bytes: s.manifest?.total_bytes ?? null,
      location: s.dir,
      ...(s.failure ? { failed_workers: s.failure.failed.map((f) => f.worker) } : {}),
      ...(s.problem ? { problem: s.problem } : {}),
    }));
    if (program.opts<Globals>().json) {
      out('', { backup_dir: dir, sets: rows });
      return;
    }
    if (rows.length === 0) {
      // A folder that is not there is more often a wrong --data-dir than a store never backed up.
      out(existsSync(dir) ? `no backup sets in ${dir}` : `no backup sets: ${dir} does not exist (check --data-dir / --backup-dir)`, {});
      return;
    }
    const lines = [`backup sets in ${dir} (oldest first):`, 'ID                    STATE       WORKERS  KEYS        BYTES         CREATED'];
    for (const r of rows) {
      const note = r.failed_workers ? `  failed: ${r.failed_workers.join(', ')}` : r.problem ? `  ${r.problem}` : '';
      lines.push(
        `${r.id}  ${r.state.padEnd(10)}  ${String(r.workers ?? '-').padEnd(7)}  ${String(r.keys ?? '-').padEnd(10)}  ${String(r.bytes ?? '-').padEnd(12)}  ${r.created_at ?? '-'}${note}`,
      );
    }
    out(lines.join('\n'), {});
  });

program
  .command('verify')
  .description('check a backup set: manifest, every file\'s size and SHA-256, integrity_check and key counts (offline)')
  .argument('<id|path>', 'a backup id in the backup folder, or the path of a set folder')
  .addOption(dataDirOption())
  .addOption(backupDirOption())
  .addOption(fromPartsOption())
  .action((idOrPath: string, o: { dataDir: string; backupDir?: string; fromParts?: string }) => {
    const { dir, manifest } = verifySet(resolveSetDir(idOrPath, o.backupDir ?? defaultBackupDir(o.dataDir)), nameList(o.fromParts, '--from-parts'));
    out(`backup ${manifest.id} in ${dir} is complete and intact: ${manifest.workers.length} workers, ${manifest.total_keys} keys, ${manifest.total_bytes} bytes`, {
      id: manifest.id,
      location: dir,
      ok: true,
      keys: manifest.total_keys,
      bytes: manifest.total_bytes,
    });
  });

program
  .command('restore')
  .description('restore a backup set into a STOPPED store\'s data directory (offline); verifies every checksum first')
  .argument('<id|path>', 'a backup id in the backup folder, or the path of a set folder')
  .addOption(dataDirOption())
  .addOption(backupDirOption())
  .addOption(
    new Option('--workers <n>', 'restore into workers worker-0..worker-<n-1> (default: the set\'s own workers)').argParser(intArg(1, 1024)),
  )
  .addOption(new Option('--names <list>', 'restore into these worker names, comma-separated (e.g. the StatefulSet pod names)').conflicts('workers'))
  .addOption(fromPartsOption())
  .action((idOrPath: string, o: { dataDir: string; backupDir?: string; workers?: number; names?: string; fromParts?: string }) => {
    const names = o.names ? nameList(o.names, '--names') : o.workers ? Array.from({ length: o.workers }, (_, i) => `worker-${i}`) : undefined;
    const json = program.opts<Globals>().json;
    const r = restore({
      setDir: resolveSetDir(idOrPath, o.backupDir ?? defaultBackupDir(o.dataDir)),
      dataDir: o.dataDir,
      names,
      fromParts: nameList(o.fromParts, '--from-parts'),
      log: (line) => {
        if (!json) process.stdout.write(`${line}\n`);
      },
    });
    const human = [
      `restored backup ${r.id} into ${r.dataDir} (${r.mode === 'copy' ? 'files copied as they were' : 'keys re-placed on the new ring'}): ${r.totalKeys} keys`,
      ...r.workers.map((w) => `  ${w.worker}.sqlite  ${w.keys} keys`),
      `start the store with exactly these workers: ${r.workers.map((w) => w.worker).join(',')}`,
    ].join('\n');
    out(human, { id: r.id, data_dir: r.dataDir, mode: r.mode, keys: r.totalKeys, workers: r.workers, moved_aside: r.movedAside ?? null });
  });

class UsageError extends Error {}

/**
 * --wait gave up while the keys are still moving. Its own class: dressed as a gRPC error it printed
 * only "DEADLINE_EXCEEDED: timeout", losing how far the migration had got and that it goes on.
 */
class WaitTimedOut extends Error {}

/**
 * A call that failed because no gateway answered at the address (nothing listening, a name that does
 * not resolve, a TLS mismatch): grpc-js's own message says what went wrong but not what to do.
 */
class Unreached extends Error {
  constructor(
    readonly failure: grpc.ServiceError,
    readonly address: string,
  ) {
    super(failure.message);
  }

  explain(): string {
    // grpc-js ends the message with an empty "Resolution note: " when it has nothing to add.
    const details = this.failure.details.replace(/\.?\s*Resolution note:\s*$/, '').trim();
    return [
      `kvctl: ${grpc.status[this.failure.code]}: cannot reach the gateway at ${this.address} (${details})`,
      'kvctl: is the store running there? Choose the gateway with --address or KV_ADDRESS; with TLS on at the gateway, kvctl needs --ca or --tls (and --cert, --key if it asks for a client certificate)',
    ].join('\n');
  }
}
const WORKER_NAME = /^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$/;

function nameList(raw: string | undefined, flag: string): string[] | undefined {
  if (raw === undefined) return undefined;
  const names = raw.split(',').map((n) => n.trim()).filter((n) => n.length > 0);
  if (names.length === 0) throw new UsageError(`${flag}: no worker names given`);
  const bad = names.find((n) => !WORKER_NAME.test(n));
  if (bad !== undefined) throw new UsageError(`${flag}: ${JSON.stringify(bad)} is not a worker name (a DNS label: lowercase letters, digits, '-')`);
  return names;
}

program.parseAsync().catch((err: unknown) => {
  if (err instanceof WaitTimedOut) {
    // "Too slow" in the exit-code table; the change itself is not undone.
    process.stderr.write(`kvctl: ${err.message}\n`);
    process.exit(EXIT.UNREACHABLE);
  }
  if (err instanceof Unreached) {
    process.stderr.write(`${err.explain()}\n`);
    process.exit(exitCodeFor(err.failure.code));
  }
  // A status from the gateway, or a KvError from checking a key or value here by the gateway's own rules
  // before sending (past the gateway's 64 KiB message limit, grpc-js refused it with RESOURCE_EXHAUSTED,
  // which read as exit 5, "store busy or full", and told a retrying script to retry for ever).
  if (err instanceof KvError || isServiceError(err)) {
    const e = toServiceError(err);
    process.stderr.write(`kvctl: ${grpc.status[e.code!] ?? String(e.code)}: ${e.details}\n`);
    process.exit(exitCodeFor(e.code!));
  }
  process.stderr.write(`kvctl: ${(err as Error).message ?? String(err)}\n`);
  process.exit(err instanceof UsageError ? EXIT.BAD_INPUT : EXIT.FAILED);
});
