import { readdirSync, statSync, statfsSync } from 'node:fs';
import { join } from 'node:path';
import { Counter, Gauge, Histogram, type Registry } from 'prom-client';
import { LATENCY_BUCKETS, METRIC_PREFIX as P } from '../shared/metrics.js';
import type { Store } from './store.js';

export type WorkerMetrics = ReturnType<typeof createWorkerMetrics>;

/**
 * Operation kinds by OpType value (proto/worker.proto): the only values the op label takes. copy and
 * drop are the migration mover's (a key copied to its new owner, then dropped from the old one).
 */
export const OP_KINDS = ['get', 'put', 'delete', 'copy', 'drop'] as const;

export interface WorkerMetricsOptions {
  /** Folder holding the database file: its file system's free space feeds the disk-filling alert. */
  dataDir: string;
  /** Where this worker's snapshots go (`<backupDir>/<backup id>/<name>.sqlite`). */
  backupDir: string;
  name: string;
}

export function createWorkerMetrics(registry: Registry, store: Store, options: WorkerMetricsOptions) {
  const registers = [registry];
  new Gauge({
    name: `${P}worker_keys`,
    help: 'Keys stored in this worker database',
    registers,
    collect() {
      this.set(store.keys);
    },
  });
  new Gauge({
    name: `${P}worker_db_bytes`,
    help: 'Size of the SQLite main database file in bytes',
    registers,
    collect() {
      this.set(store.sizes().db);
    },
  });
  new Gauge({
    name: `${P}worker_wal_bytes`,
    help: 'Size of the SQLite write-ahead log in bytes',
    registers,
    collect() {
      this.set(store.sizes().wal);
    },
  });
  // The cap SQLite enforces (page_size x max_page_count, KV_MAX_DB_PAGES); past it writes fail with
  // RESOURCE_EXHAUSTED. Without a cap this is SQLite's own limit, far above any disk.
  const dbLimit = (store.db.pragma('page_size', { simple: true }) as number) * (store.db.pragma('max_page_count', { simple: true }) as number);
  new Gauge({
    name: `${P}worker_db_max_bytes`,
    help: 'Largest size the SQLite database may grow to (page size x max_page_count)',
    registers,
  }).set(dbLimit);
  // Free space is read at scrape time: one statfs per scrape, nothing on the request path.
  const fs = (): { avail: number; size: number } => {
    try {
      const s = statfsSync(options.dataDir);
      return { avail: s.bavail * s.bsize, size: s.blocks * s.bsize };
    } catch {
      return { avail: 0, size: 0 };
    }
  };
  new Gauge({
    name: `${P}worker_fs_avail_bytes`,
    help: 'Bytes available to this worker on the file system holding its database',
    registers,
    collect() {
      this.set(fs().avail);
    },
  });
  new Gauge({
    name: `${P}worker_fs_size_bytes`,
    help: 'Total size in bytes of the file system holding the database',
    registers,
    collect() {
      this.set(fs().size);
    },
  });
  const opDuration = new Histogram({
    name: `${P}worker_op_duration_seconds`,
    help: 'Time to apply one operation inside its transaction, by kind (get, put, delete; copy, drop while keys migrate); the commit is in kv_worker_batch_duration_seconds',
    labelNames: ['op'],
    buckets: LATENCY_BUCKETS,
    registers,
  });
  const batchDuration = new Histogram({
    name: `${P}worker_batch_duration_seconds`,
    help: 'Time to apply one batch of point operations (one gateway event-loop turn) as one transaction, commit and fsync included',
    buckets: LATENCY_BUCKETS,
    registers,
  });
  const ops = new Counter({
    name: `${P}worker_ops_total`,
    help: 'Point operations applied, by kind and gRPC status code (a get of a missing key is NOT_FOUND)',
    labelNames: ['op', 'code'],
    registers,
  });
  const sqliteErrors = new Counter({
    name: `${P}worker_sqlite_errors_total`,
    help: 'SQLite errors by SQLite error code (SQLITE_BUSY: lock not granted within busy_timeout; SQLITE_FULL: disk or page cap full; ...)',
    labelNames: ['sqlite_code'],
    registers,
  });
  // Present from the start so busy and full rates read 0 rather than absent.
  for (const code of ['SQLITE_BUSY', 'SQLITE_FULL', 'SQLITE_IOERR']) sqliteErrors.labels(code).inc(0);
  const backupTimestamp = new Gauge({
    name: `${P}worker_last_backup_timestamp_seconds`,
    help: 'Unix time when the last snapshot attempt of this worker finished (0: none since start)',
    registers,
  });
  const backupDuration = new Gauge({
    name: `${P}worker_last_backup_duration_seconds`,
    help: 'Duration of the last snapshot attempt',
    registers,
  });
  const backupBytes = new Gauge({
    name: `${P}worker_last_backup_bytes`,
    help: 'Size of the last successful snapshot file',
    registers,
  });
  const backupSuccess = new Gauge({
    name: `${P}worker_last_backup_success`,
    help: '1 if the last snapshot attempt succeeded and was verified, 0 if it failed',
    registers,
  });
  const lastSuccess = new Gauge({
    name: `${P}worker_last_backup_success_timestamp_seconds`,
    help: 'Unix time of the newest successful, verified snapshot of this worker, also across restarts (0: none found)',
    registers,
  });
  const backupSeconds = new Histogram({
    name: `${P}worker_backup_duration_seconds`,
    help: 'Duration of snapshot attempts (VACUUM INTO, integrity_check, checksum), by outcome',
    labelNames: ['outcome'],
    buckets: [0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600],
    registers,
  });
  const backups = new Counter({
    name: `${P}worker_backups_total`,
    help: 'Snapshot requests by outcome (success, failure; refused: not attempted, e.g. a duplicate id, a full queue, another membership epoch)',
    labelNames: ['outcome'],
    registers,
  });
  for (const o of ['success', 'failure', 'refused']) backups.labels(o).inc(0);
  // A restart must not make the last backup look missing (and fire the backup-age alert): the newest
  // snapshot file on disk is a verified one, since only a verified snapshot gets its final name.
  const found = newestSnapshot(options.backupDir, options.name);
  if (found) {
    lastSuccess.set(found.mtimeMs / 1000);
    backupBytes.set(found.size);
    backupSuccess.set(1);
  }

  // Children resolved once: a labels() lookup per operation is measurable on the hot path.
  const opTimers = OP_KINDS.map((k) => opDuration.labels(k));
  return {
    opDuration,
    batchDuration,
    ops,
    sqliteErrors,
    backupTimestamp,
    backupDuration,
    backupBytes,
    backupSuccess,
    lastSuccess,
    backupSeconds,
    backups,
    /** Records one point operation's duration; `type` is its OpType value. */
    observeOp(type: number, seconds: number): void {
      opTimers[type]?.observe(seconds);
    },
  };
}

function newestSnapshot(backupDir: string, name: string): { mtimeMs: number; size: number } | undefined {
  let newest: { mtimeMs: number; size: number } | undefined;
  let sets: string[];
  try {
    sets = readdirSync(backupDir);
  } catch {
    return undefined;
  }
  for (const set of sets) {
    try {
      const s = statSync(join(backupDir, set, `${name}.sqlite`));
      if (s.isFile() && (!newest || s.mtimeMs > newest.mtimeMs)) newest = { mtimeMs: s.mtimeMs, size: s.size };
    } catch {
      // not a set this worker took part in
    }
  }
  return newest;
}
