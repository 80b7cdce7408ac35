// Overload: beyond its bounds the store refuses fast instead of growing memory without limit.
// - The gateway under a flood of concurrent writes (healthy workers) stays under a stated RSS bound
//   and serves normally afterwards. (A flood at a hung worker is in worker-hang.test.ts.)
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { kvClient } from './helpers/client.js';
import { TestCluster } from './helpers/processes.js';
import { MiB, flood, reportFigures, rssBytes, sampleRss } from './helpers/verifier.js';

let cluster: TestCluster;

beforeAll(async () => {
  cluster = await TestCluster.start({ workers: 2 });
});

afterAll(async () => {
  await cluster?.stop();
});

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));
const round = (n: number): number => Math.round(n * 100) / 100;

describe('overload', () => {
  it('keeps the gateway under its memory bound through a flood of writes, then serves normally', async () => {
    const GATEWAY_RSS_BOUND = 300 * MiB;
    const pid = cluster.gateway.pid;
    const before = rssBytes(pid)!;
    const keys = Array.from({ length: 5000 }, (_, i) => `flood/${i}`);
    const rss = sampleRss(pid);
    const flooded = await flood(cluster.address, keys, 2048, 2000, 4000, 20_000);
    const samples = rss.stop();
    const peak = Math.max(...samples);

    // Afterwards: an ordinary client is served at once, and memory comes back down (GC permitting).
    const kv = kvClient(cluster.address, 10_000);
    const t = performance.now();
    await kv.put('after-flood', 'ok');
    expect(await kv.get('after-flood')).toBe('ok');
    const roundTripMs = performance.now() - t;
    kv.close();
    await sleep(1000);
    const after = rssBytes(pid)!;

    reportFigures('gateway-flood', {
      concurrency: 2000,
      valueBytes: 2048,
      floodMs: 4000,
      calls: flooded.calls,
      codes: flooded.codes,
      slowestCallMs: flooded.maxMs,
      gatewayRssBeforeMiB: round(before / MiB),
      gatewayRssPeakMiB: round(peak / MiB),
      gatewayRssAfterMiB: round(after / MiB),
      gatewayRssBoundMiB: GATEWAY_RSS_BOUND / MiB,
      putGetAfterFloodMs: round(roundTripMs),
    });
    expect(peak).toBeLessThan(GATEWAY_RSS_BOUND);
    // Every call was answered with success or a correct refusal; none was lost or left hanging.
    const allowed = ['OK', 'RESOURCE_EXHAUSTED', 'DEADLINE_EXCEEDED'];
    for (const code of Object.keys(flooded.codes)) expect(allowed, flooded.details[code]).toContain(code);
    expect(flooded.codes.OK ?? 0).toBeGreaterThan(0);
  });
});
