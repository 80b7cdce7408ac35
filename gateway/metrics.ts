import { status } from '@grpc/grpc-js';
import { Counter, Gauge, Histogram, type Registry } from 'prom-client';
import { LONG_LATENCY_BUCKETS, METRIC_PREFIX as P } from '../shared/metrics.js';

export type GatewayMetrics = ReturnType<typeof createGatewayMetrics>;

export const PUBLIC_METHODS = ['Put', 'Get', 'Delete', 'ListKeys', 'ListKeysPage', 'Backup'] as const;
export type PublicMethod = (typeof PUBLIC_METHODS)[number];

export function createGatewayMetrics(registry: Registry) {
  const registers = [registry];
  const requests = new Counter({
    name: `${P}gateway_requests_total`,
    help: 'Client requests handled by the gateway, by method and gRPC status code',
    labelNames: ['method', 'code'],
    registers,
  });
  const duration = new Histogram({
    name: `${P}gateway_request_duration_seconds`,
    help: 'Client request latency at the gateway, by method, whatever the outcome',
    labelNames: ['method'],
    buckets: LONG_LATENCY_BUCKETS,
    registers,
  });
  const routed = new Counter({
    name: `${P}gateway_worker_requests_total`,
    help: 'Point requests (Put, Get, Delete) routed to each worker',
    labelNames: ['worker'],
    registers,
  });
  const workerErrors = new Counter({
    name: `${P}gateway_worker_errors_total`,
    help:
      'Point requests to a worker that failed, by gRPC status code: unreachable or broken stream (UNAVAILABLE), no answer in time (DEADLINE_EXCEEDED), in-flight limit or full disk (RESOURCE_EXHAUSTED), storage errors the worker returned',
    labelNames: ['worker', 'code'],
    registers,
  });
  // Sampled at scrape time from the links rather than updated per request.
  let inflightSource: () => Iterable<[string, number]> = () => [];
  new Gauge({
    name: `${P}gateway_worker_inflight`,
    help: 'Requests waiting on each worker',
    labelNames: ['worker'],
    registers,
    collect() {
      // Only the workers linked now: one that left the ring must not stay behind as a series.
      this.reset();
      for (const [worker, n] of inflightSource()) this.labels(worker).set(n);
    },
  });
  const workerUp = new Gauge({
    name: `${P}gateway_worker_up`,
    help: '1 if the gateway has a ready connection to the worker, else 0',
    labelNames: ['worker'],
    registers,
  });
  const ringMembers = new Gauge({ name: `${P}gateway_ring_members`, help: 'Workers on the hash ring', registers });
  const ringMember = new Gauge({
    name: `${P}gateway_ring_member_info`,
    help: 'One series per worker on the ring (value 1), with its address',
    labelNames: ['worker', 'address'],
    registers,
  });
  const fanout = new Histogram({
    name: `${P}gateway_fanout_duration_seconds`,
    help: 'Duration of calls fanned out to every worker (ListKeys, Backup), from first request to last answer',
    labelNames: ['method'],
    buckets: LONG_LATENCY_BUCKETS,
    registers,
  });

  const backupRuns = new Counter({
    name: `${P}gateway_backups_total`,
    help: 'Backup calls by outcome: success (complete set and manifest), failure (some worker failed), refused (one was running)',
    labelNames: ['outcome'],
    registers,
  });
  const backupSeconds = new Histogram({
    name: `${P}gateway_backup_duration_seconds`,
    help: 'Duration of backups that ran (success or failure), from the first snapshot request to the manifest',
    labelNames: ['outcome'],
    buckets: [0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600],
    registers,
  });
  const backupLastSuccess = new Gauge({
    name: `${P}gateway_last_backup_success_timestamp_seconds`,
    help: 'Unix time of the last complete backup set this gateway wrote a manifest for',
    registers,
  });
  const backupLastBytes = new Gauge({
    name: `${P}gateway_last_backup_bytes`,
    help: 'Total snapshot bytes of the last complete backup set',
    registers,
  });
  const backupPruned = new Counter({
    name: `${P}gateway_backup_sets_pruned_total`,
    help: 'Backup set folders deleted by retention (KV_BACKUP_KEEP)',
    registers,
  });
  for (const o of ['success', 'failure', 'refused']) backupRuns.labels(o).inc(0);
  const adminRequests = new Counter({
    name: `${P}gateway_admin_requests_total`,
    help: 'Admin calls (kvctl cluster ...) by method and status code; UNAUTHENTICATED or PERMISSION_DENIED: a missing or wrong admin token',
    labelNames: ['method', 'code'],
    registers,
  });
  backupPruned.inc(0);

  // Children resolved once: a labels() lookup per request is measurable on the hot path.
  const durationBy = new Map(PUBLIC_METHODS.map((m) => [m, duration.labels(m)]));
  const requestsBy = new Map<string, Counter.Internal>();
  for (const m of PUBLIC_METHODS) requests.labels(m, 'OK').inc(0);

  return {
    requests,
    /**
     * Starts a worker's series at 0, so the first failure shows as an increase (Prometheus cannot see
     * the first increment of a series that appears with the value 1) and rate() is 0, not absent.
     */
    addWorker(name: string): void {
      routed.labels(name).inc(0);
      for (const code of ['UNAVAILABLE', 'DEADLINE_EXCEEDED', 'RESOURCE_EXHAUSTED']) workerErrors.labels(name, code).inc(0);
      workerUp.labels(name).set(0);
    },
    duration,
    routed,
    workerErrors,
    setInflightSource(fn: () => Iterable<[string, number]>): void {
      inflightSource = fn;
    },
    workerUp,
    adminCall(method: string, code: string): void {
      adminRequests.labels(method, code).inc();
    },
    ringMembers,
    ringMember,
    fanout,
    backups: {
      finished(outcome: 'success' | 'failure' | 'refused', seconds: number, bytes: number): void {
        backupRuns.labels(outcome).inc();
        if (outcome === 'refused') return;
        backupSeconds.labels(outcome).observe(seconds);
        if (outcome === 'success') {
          backupLastSuccess.set(Date.now() / 1000);
          backupLastBytes.set(bytes);
        }
      },
      pruned(sets: number): void {
        backupPruned.inc(sets);
      },
    },
    observe(method: PublicMethod, code: number, seconds: number): void {
      durationBy.get(method)!.observe(seconds);
      const k = `${method}:${code}`;
      let c = requestsBy.get(k);
      if (!c) {
        c = requests.labels(method, status[code] ?? String(code));
        requestsBy.set(k, c);
      }
      c.inc();
    },
  };
}
