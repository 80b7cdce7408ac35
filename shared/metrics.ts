// A registry per process with the default process metrics (CPU, heap, event-loop lag, fds) and the
// kv_ prefix convention. Gateway and worker define their own series on top.
import { Registry, collectDefaultMetrics } from 'prom-client';

export const METRIC_PREFIX = 'kv_';

/** Latency buckets from 50 µs to 10 s: point operations are sub-millisecond, fan-outs take seconds. */
export const LATENCY_BUCKETS = [
  0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10,
];

export function createRegistry(labels: Record<string, string>): Registry {
  const registry = new Registry();
  registry.setDefaultLabels(labels);
  collectDefaultMetrics({ register: registry });
  return registry;
}
