// /metrics of a real gateway and real workers: valid for promtool, counters that move by exactly the
// calls made with the right status codes, every metric the dashboard and alerts name really exported,
// and logs at the default level that stay quiet for successful requests.
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { parse } from 'yaml';
import { Ring } from '../shared/ring.js';
import { codeOf, grpc, kvClient, type KvClient } from './helpers/client.js';
import { ROOT, TestCluster, waitFor } from './helpers/processes.js';
import { exportedNames, parseSamples, promTool, promqlMetricNames, runPromtool, scrape, sumOf, type Sample } from './helpers/prometheus.js';

const WORKERS = ['worker-0', 'worker-1'];
let cluster: TestCluster;
let kv: KvClient;
const ring = new Ring(WORKERS);

/** A key owned by `worker`, distinct for each n. */
function keyOn(worker: string, n: number): string {
  for (let i = 0; ; i++) {
    const k = `m-${n}-${i}`;
    if (ring.owner(k) === worker) return k;
  }
}

const metricsPort = (p: { listening?: { metricsPort: number } }): number => p.listening!.metricsPort;
const gatewaySamples = async (): Promise<Sample[]> => parseSamples(await scrape(metricsPort(cluster.gateway)));
const workerSamples = async (name: string): Promise<Sample[]> => parseSamples(await scrape(metricsPort(cluster.worker(name))));

beforeAll(async () => {
  // Default log level, as operators run it: the logging test below reads these lines.
  cluster = await TestCluster.start({ names: WORKERS, env: { KV_LOG_LEVEL: 'info' } });
  kv = kvClient(cluster.address);
});

afterAll(async () => {
  kv?.close();
  await cluster?.stop();
});

describe('promtool check metrics', () => {
  const promtool = promTool('promtool');
  it.skipIf(!promtool)("passes on the gateway's and a worker's /metrics", async () => {
    await kv.put('lint-me', 'v');
    await codeOf(kv.get('no-such-key'));
    for (const port of [metricsPort(cluster.gateway), metricsPort(cluster.worker('worker-0'))]) {
      const text = await scrape(port);
      const r = runPromtool(promtool!, ['check', 'metrics'], text);
      expect(r.out, `promtool on :${port}`).toBe('');
      expect(r.code).toBe(0);
    }
  });
});

describe('counters', () => {
  it('move by exactly the calls made, with the right status codes, at the gateway and on each worker', async () => {
    const gwBefore = await gatewaySamples();
    const wBefore = new Map(await Promise.all(WORKERS.map(async (w) => [w, await workerSamples(w)] as const)));

    // On each worker: 2 new keys, 1 overwrite, 2 found gets, 1 missing get, 1 delete of a key that
    // exists and 1 of one that does not. Plus two requests the gateway rejects before routing.
    for (const w of WORKERS) {
      const [a, b, missing] = [keyOn(w, 1), keyOn(w, 2), keyOn(w, 3)];
      await kv.put(a, 'one');
      await kv.put(b, 'two');
      await kv.put(a, 'uno');
      await kv.get(a);
      await kv.get(b);
      expect(await codeOf(kv.get(missing))).toBe(grpc.status.NOT_FOUND);
      await kv.del(b);
      await kv.del(missing);
    }
    expect(await codeOf(kv.put('k'.repeat(129), 'v'))).toBe(grpc.status.INVALID_ARGUMENT);
    expect(await codeOf(kv.get(''))).toBe(grpc.status.INVALID_ARGUMENT);

    const gwAfter = await gatewaySamples();
    const n = WORKERS.length;
    const delta = (name: string, labels: Record<string, string>): number => sumOf(gwAfter, name, labels) - sumOf(gwBefore, name, labels);
    const requests = (method: string, code: string): number => delta('kv_gateway_requests_total', { method, code });
    expect(requests('Put', 'OK')).toBe(3 * n);
    expect(requests('Put', 'INVALID_ARGUMENT')).toBe(1);
    expect(requests('Get', 'OK')).toBe(2 * n);
    expect(requests('Get', 'NOT_FOUND')).toBe(1 * n);
    expect(requests('Get', 'INVALID_ARGUMENT')).toBe(1);
    expect(requests('Delete', 'OK')).toBe(2 * n);
    expect(delta('kv_gateway_requests_total', {})).toBe(8 * n + 2);
    // Every request is timed, whatever its outcome.
    expect(delta('kv_gateway_request_duration_seconds_count', { method: 'Put' })).toBe(3 * n + 1);
    expect(delta('kv_gateway_request_duration_seconds_count', { method: 'Get' })).toBe(3 * n + 1);
    expect(delta('kv_gateway_request_duration_seconds_count', { method: 'Delete' })).toBe(2 * n);
    // A NOT_FOUND is an answer, not a worker failing.
    expect(delta('kv_gateway_worker_errors_total', {})).toBe(0);

    for (const w of WORKERS) {
      const after = await workerSamples(w);
      const before = wBefore.get(w)!;
      const wDelta = (name: string, labels: Record<string, string> = {}): number => sumOf(after, name, labels) - sumOf(before, name, labels);
      // Rejected requests never reach a worker; each routed one is applied exactly once where it was routed.
      expect(delta('kv_gateway_worker_requests_total', { worker: w })).toBe(8);
      expect(wDelta('kv_worker_ops_total')).toBe(8);
      expect(wDelta('kv_worker_ops_total', { op: 'put', code: 'OK' })).toBe(3);
      expect(wDelta('kv_worker_ops_total', { op: 'get', code: 'OK' })).toBe(2);
      expect(wDelta('kv_worker_ops_total', { op: 'get', code: 'NOT_FOUND' })).toBe(1);
      expect(wDelta('kv_worker_ops_total', { op: 'delete', code: 'OK' })).toBe(2);
      expect(wDelta('kv_worker_op_duration_seconds_count', { op: 'put' })).toBe(3);
      expect(wDelta('kv_worker_op_duration_seconds_count', { op: 'get' })).toBe(3);
      expect(wDelta('kv_worker_op_duration_seconds_count', { op: 'delete' })).toBe(2);
      expect(wDelta('kv_worker_keys')).toBe(1);
      expect(sumOf(after, 'kv_worker_keys', { worker: w })).toBe(sumOf(after, 'kv_worker_keys'));
      expect(wDelta('kv_worker_batch_duration_seconds_count')).toBeGreaterThanOrEqual(1);
    }
  });

  it('Backup sets every worker\'s last-backup gauges and times the fan-out', async () => {
    const before = await gatewaySamples();
    const started = Date.now() / 1000;
    expect((await kv.backup()).success).toBe(true);
    const after = await gatewaySamples();
    expect(sumOf(after, 'kv_gateway_requests_total', { method: 'Backup', code: 'OK' }) - sumOf(before, 'kv_gateway_requests_total', { method: 'Backup', code: 'OK' })).toBe(1);
    expect(sumOf(after, 'kv_gateway_fanout_duration_seconds_count', { method: 'Backup' }) - sumOf(before, 'kv_gateway_fanout_duration_seconds_count', { method: 'Backup' })).toBe(1);
    for (const w of WORKERS) {
      const s = await workerSamples(w);
      expect(sumOf(s, 'kv_worker_last_backup_success')).toBe(1);
      expect(sumOf(s, 'kv_worker_last_backup_success_timestamp_seconds')).toBeGreaterThanOrEqual(Math.floor(started) - 1);
      expect(sumOf(s, 'kv_worker_last_backup_timestamp_seconds')).toBeGreaterThanOrEqual(Math.floor(started) - 1);
      expect(sumOf(s, 'kv_worker_last_backup_bytes')).toBeGreaterThan(0);
    }
  });

  it('a worker that is down: the gateway counts UNAVAILABLE for it and shows it down; restarted, it keeps its last backup time', async () => {
    const w = 'worker-1';
    const lastBackup = sumOf(await workerSamples(w), 'kv_worker_last_backup_success_timestamp_seconds');
    expect(lastBackup).toBeGreaterThan(0);
    const before = await gatewaySamples();
    await cluster.worker(w).stop();
    await waitFor('the gateway to see worker-1 down', async () => sumOf(await gatewaySamples(), 'kv_gateway_worker_up', { worker: w }) === 0);
    expect(await codeOf(kv.get(keyOn(w, 9)))).toBe(grpc.status.UNAVAILABLE);
    const after = await gatewaySamples();
    const delta = (name: string, labels: Record<string, string>): number => sumOf(after, name, labels) - sumOf(before, name, labels);
    expect(delta('kv_gateway_requests_total', { method: 'Get', code: 'UNAVAILABLE' })).toBe(1);
    expect(delta('kv_gateway_worker_errors_total', { worker: w, code: 'UNAVAILABLE' })).toBe(1);
    expect(delta('kv_gateway_worker_errors_total', { worker: 'worker-0' })).toBe(0);
    expect(sumOf(after, 'kv_gateway_worker_up', { worker: 'worker-0' })).toBe(1);

    await cluster.startWorker(w);
    const restarted = await workerSamples(w);
    // The snapshot file's time, restored from disk: the same second as the gauge before the restart.
    expect(Math.abs(sumOf(restarted, 'kv_worker_last_backup_success_timestamp_seconds') - lastBackup)).toBeLessThan(2);
    await waitFor('the gateway to see worker-1 up again', async () => sumOf(await gatewaySamples(), 'kv_gateway_worker_up', { worker: w }) === 1);
  });
});

describe('names', () => {
  it('every metric the dashboard and the alerts query is one the gateway or a worker really exports', async () => {
    const exported = new Set([
      ...exportedNames(await scrape(metricsPort(cluster.gateway))),
      ...exportedNames(await scrape(metricsPort(cluster.worker('worker-0')))),
      'up', // Prometheus's own, per target
    ]);
    const dash = JSON.parse(readFileSync(join(ROOT, 'k8s/monitoring/dashboard.json'), 'utf8')) as {
      panels: { targets?: { expr: string }[] }[];
      templating: { list: { definition?: string }[] };
    };
    const rules = parse(readFileSync(join(ROOT, 'k8s/monitoring/alerts.yaml'), 'utf8')) as { spec: { groups: { rules: { expr: string }[] }[] } };
    const exprs = [
      ...dash.panels.flatMap((p) => (p.targets ?? []).map((t) => t.expr)),
      ...dash.templating.list.flatMap((v) => (v.definition ? [v.definition.replace(/^label_values\(([^,]+),.*$/, '$1')] : [])),
      ...rules.spec.groups.flatMap((g) => g.rules.map((r) => r.expr)),
    ];
    const named = new Set(exprs.flatMap(promqlMetricNames));
    expect(named.size).toBeGreaterThan(15);
    expect([...named].filter((n) => !exported.has(n))).toEqual([]);
  });

  it('labels are bounded: no series carries a key', async () => {
    const all = [...(await gatewaySamples()), ...(await workerSamples('worker-0'))];
    const allowed = new Set(['method', 'code', 'worker', 'address', 'op', 'sqlite_code', 'outcome', 'le', 'quantile', 'type', 'space', 'kind', 'version', 'major', 'minor', 'patch']);
    const labels = new Set(all.flatMap((s) => Object.keys(s.labels)));
    expect([...labels].filter((l) => !allowed.has(l))).toEqual([]);
    expect(all.some((s) => Object.values(s.labels).some((v) => v.startsWith('m-')))).toBe(false);
  });
});

describe('logs at the default level (info)', () => {
  it('have no line per successful request: 200 calls add none', async () => {
    const lines = (): string[] =>
      [cluster.gateway, ...WORKERS.map((w) => cluster.worker(w))].flatMap((p) => p.output.join('').split('\n').filter((l) => l.trim() !== ''));
    const before = lines().length;
    for (let i = 0; i < 50; i++) {
      await kv.put(`quiet-${i}`, 'v');
      await kv.get(`quiet-${i}`);
      await kv.del(`quiet-${i}`);
      await codeOf(kv.get(`quiet-${i}`)); // NOT_FOUND is an answer, not an error to log
    }
    expect(lines().slice(before)).toEqual([]);
  });

  it('are JSON with a level, one line per lifecycle event (start, worker lost and back)', () => {
    const gw = cluster.gateway.output.join('').split('\n').filter((l) => l.trim() !== '').map((l) => JSON.parse(l) as { level: string; msg: string });
    for (const rec of gw) expect(['info', 'warn', 'error']).toContain(rec.level);
    const msgs = gw.map((r) => r.msg);
    expect(msgs.filter((m) => m === 'gateway listening')).toHaveLength(1);
    // worker-1 was stopped and restarted once above.
    expect(msgs.filter((m) => m === 'worker connection lost')).toHaveLength(1);
    expect(msgs.filter((m) => m === 'worker connected').length).toBe(WORKERS.length + 1);
  });
});
