import { Counter, Gauge, Histogram, type Registry } from 'prom-client';
import { LATENCY_BUCKETS, METRIC_PREFIX as P } from '../shared/metrics.js';
import type { Store } from './store.js';

export type WorkerMetrics = ReturnType<typeof createWorkerMetrics>;

export function createWorkerMetrics(registry: Registry, store: Store) {
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
  const opDuration = new Histogram({
    name: `${P}worker_op_duration_seconds`,
    help: 'Time to apply operations on this worker, by kind (batch = one transaction of point operations)',
    labelNames: ['op'],
    buckets: LATENCY_BUCKETS,
    registers,
  });
  const ops = new Counter({
    name: `${P}worker_ops_total`,
    help: 'Point operations applied, by kind and gRPC status code',
    labelNames: ['op', 'code'],
    registers,
  });
  const sqliteErrors = new Counter({
    name: `${P}worker_sqlite_errors_total`,
    help: 'SQLite errors by SQLite error code (SQLITE_BUSY, SQLITE_FULL, ...)',
    labelNames: ['sqlite_code'],
    registers,
  });
  const backupTimestamp = new Gauge({
    name: `${P}worker_last_backup_timestamp_seconds`,
    help: 'Unix time when the last snapshot attempt of this worker finished',
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
    help: 'Unix time of the last successful, verified snapshot',
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
    help: 'Snapshot attempts by outcome (success, failure)',
    labelNames: ['outcome'],
    registers,
  });
  for (const o of ['success', 'failure']) backups.labels(o).inc(0);
  return { opDuration, ops, sqliteErrors, backupTimestamp, backupDuration, backupBytes, backupSuccess, lastSuccess, backupSeconds, backups };
}
