// A real Prometheus server scrapes a real gateway and every worker on loopback and ingests their
// series: after traffic, its query API answers with the request counter by method and code, each
// worker's key count as written, up == 1 for every target, and every dashboard query evaluates.
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Ring } from '../shared/ring.js';
import { codeOf, grpc, kvClient, type KvClient } from './helpers/client.js';
import { ROOT, TestCluster, waitFor } from './helpers/processes.js';
import { PrometheusServer, promTool } from './helpers/prometheus.js';

const WORKERS = ['worker-0', 'worker-1', 'worker-2'];
const KEYS = 30;
const binary = promTool('prometheus');
let cluster: TestCluster;
let prom: PrometheusServer;
let kv: KvClient;

describe.skipIf(!binary)('Prometheus scraping the gateway and all workers', () => {
  beforeAll(async () => {
    cluster = await TestCluster.start({ names: WORKERS });
    kv = kvClient(cluster.address);
    // Job names as the ServiceMonitors give them in Kubernetes, so the dashboard's $job default applies.
    prom = await PrometheusServer.start(binary!, [
      { job: 'kv-gateway', targets: [`127.0.0.1:${cluster.gateway.listening!.metricsPort}`] },
      { job: 'kv-worker', targets: WORKERS.map((w) => `127.0.0.1:${cluster.worker(w).listening!.metricsPort}`) },
    ]);
  });

  afterAll(async () => {
    kv?.close();
    await prom?.stop();
    await cluster?.stop();
  });

  it('ingests the request counter by method and code, each worker\'s key count, and up == 1 for every target', async () => {
    for (let i = 0; i < KEYS; i++) await kv.put(`scrape-${i}`, `v${i}`);
    for (let i = 0; i < 5; i++) await kv.get(`scrape-${i}`);
    expect(await codeOf(kv.get('scrape-missing'))).toBe(grpc.status.NOT_FOUND);
    expect(await codeOf(kv.put('', 'v'))).toBe(grpc.status.INVALID_ARGUMENT);

    const ring = new Ring(WORKERS);
    const expectedKeys = new Map(WORKERS.map((w) => [w, 0]));
    for (let i = 0; i < KEYS; i++) expectedKeys.set(ring.owner(`scrape-${i}`), expectedKeys.get(ring.owner(`scrape-${i}`))! + 1);

    // Scraped every second; wait (bounded) for a scrape that saw all of the traffic.
    const byMethodCode = await waitFor(
      'Prometheus to ingest the traffic',
      async () => {
        const rows = await prom.query('sum by (method, code) (kv_gateway_requests_total{job="kv-gateway"})');
        const m = new Map(rows.map((r) => [`${r.metric.method} ${r.metric.code}`, Number(r.value[1])]));
        return m.get(`Put OK`) === KEYS && m.get('Get NOT_FOUND') === 1 && m.get('Put INVALID_ARGUMENT') === 1 ? m : undefined;
      },
      30_000,
      500,
    );
    expect(byMethodCode.get('Get OK')).toBe(5);

    // Each target is scraped on its own schedule (and on two busy cores a scrape can time out), so
    // the workers' latest samples may trail the gateway's: wait for them too, then compare.
    let keys = new Map<string, number>();
    await waitFor(
      "Prometheus to ingest every worker's key count",
      async () => {
        const rows = await prom.query('kv_worker_keys{job="kv-worker"}');
        keys = new Map(rows.map((r) => [r.metric.worker, Number(r.value[1])]));
        return [...keys.values()].reduce((a, b) => a + b, 0) === KEYS && keys.size === WORKERS.length;
      },
      30_000,
      500,
    ).catch(() => undefined);
    expect(keys).toEqual(expectedKeys);
    expect((await prom.query('sum(kv_worker_keys)')).map((r) => Number(r.value[1]))).toEqual([KEYS]);

    const up = await waitFor(
      'every target up',
      async () => {
        const rows = await prom.query('up');
        return rows.length === WORKERS.length + 1 && rows.every((r) => r.value[1] === '1') ? rows : undefined;
      },
      30_000,
      500,
    );
    expect(up.map((r) => r.metric.job).sort()).toEqual(['kv-gateway', 'kv-worker', 'kv-worker', 'kv-worker']);

    // The gateway's view of each worker agrees.
    const workerUp = await prom.query('kv_gateway_worker_up');
    expect(workerUp.map((r) => [r.metric.worker, r.value[1]]).sort()).toEqual(WORKERS.map((w) => [w, '1']));
  });

  it('evaluates every dashboard query without error, and the main panels have data', async () => {
    const dash = JSON.parse(readFileSync(join(ROOT, 'k8s/monitoring/dashboard.json'), 'utf8')) as {
      panels: { title: string; targets?: { expr: string }[] }[];
    };
    // Rates need two scrapes after the traffic; the test above waited for one.
    await new Promise((r) => setTimeout(r, 2500));
    const empty: string[] = [];
    for (const p of dash.panels) {
      for (const t of p.targets ?? []) {
        const expr = t.expr.replaceAll('$__rate_interval', '1m').replaceAll('$worker', '.*').replaceAll('$job', 'kv-gateway|kv-worker');
        const rows = await prom.query(expr); // throws on any PromQL error
        if (rows.length === 0) empty.push(p.title);
      }
    }
    for (const title of ['Request rate by method', 'Latency p50 by method', 'Latency p99 by method', 'Load per worker', 'Keys per worker', 'Backup age', 'Worker up (as the gateways see it)', 'Targets up']) {
      expect(empty, `panel "${title}" has no data`).not.toContain(title);
    }
  });
});
