// A registry per process with the default process metrics (CPU, heap, event-loop lag, fds) and the
// kv_ prefix convention. Gateway and worker define their own series on top. The default metrics keep
// their standard names (process_*, nodejs_*) so stock Node.js dashboards and alerts work unchanged.
import { Registry, collectDefaultMetrics } from 'prom-client';

export const METRIC_PREFIX = 'kv_';

/** Latency buckets from 50 µs to 10 s: point operations are sub-millisecond, a stalled one times out at seconds. */
export const LATENCY_BUCKETS = [
  0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10,
];

/**
 * LATENCY_BUCKETS continued to 10 minutes, for series that also hold fan-outs: ListKeys may run up to
 * KV_FANOUT_TIMEOUT_MS (60 s) and Backup up to KV_BACKUP_TIMEOUT_MS (600 s). Without these, every slow
 * Backup would land in +Inf and its quantiles would read as "10 s". Point operations never reach the
 * extra buckets, and finding a bucket scans from the smallest, so they cost nothing on the hot path.
 */
export const LONG_LATENCY_BUCKETS = [...LATENCY_BUCKETS, 30, 60, 120, 300, 600];

/**
 * How often the event-loop lag histogram (nodejs_eventloop_lag_p99_seconds and friends) samples.
 * prom-client's default of 10 ms is a timer that wakes every process 100 times a second, idle or
 * not (docs/performance.md: idle wake-ups per process fell from ~100-120 to 10-20 a second; CPU per
 * request under load did not move beyond the noise). At 100 ms a stall of 100 ms or more is always
 * seen, and a shorter one still shows in the request latency histograms.
 */
export const EVENT_LOOP_SAMPLE_MS = 100;

const REDUNDANT_DEFAULTS = ['nodejs_active_handles_total', 'nodejs_active_requests_total', 'nodejs_active_resources_total'];

export function createRegistry(labels: Record<string, string>): Registry {
  const registry = new Registry();
  registry.setDefaultLabels(labels);
  collectDefaultMetrics({ register: registry, eventLoopMonitoringPrecision: EVENT_LOOP_SAMPLE_MS });
  // prom-client exports these three gauges with a _total suffix, which Prometheus reserves for
  // counters (promtool check metrics rejects them). Each is the sum over `type` of nodejs_active_handles,
  // nodejs_active_requests and nodejs_active_resources, which stay.
  for (const name of REDUNDANT_DEFAULTS) registry.removeSingleMetric(name);
  return registry;
}
