// Scaling workers out and in while a verifying load runs through two gateways: 3 → 5 → 2 workers.
// Nothing acknowledged is lost, no delete comes back, every read is right, ListKeys matches the
// model, and only keys whose owner changed were moved.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Ring } from '../shared/ring.js';
import { admin, waitStable } from './helpers/admin.js';
import { Checker } from './helpers/checker.js';
import { getAll, grpc, kvClient, putFiller, type KvClient } from './helpers/client.js';
import { TestCluster } from './helpers/processes.js';
import { scanWorkerKeys } from './helpers/worker-client.js';

let cluster: TestCluster;
let secondAddress: string;
let kv: KvClient;

beforeAll(async () => {
  cluster = await TestCluster.start({ workers: 3, gatewayArgs: ['--migration-rate', '3000'] });
  secondAddress = (await cluster.startExtraGateway()).address;
  kv = kvClient(cluster.address, 30_000);
});

afterAll(async () => {
  kv?.close();
  await cluster?.stop();
});

describe('online rebalancing', () => {
  it('scales 3 → 5 → 2 under a verifying load through two gateways, losing nothing', async () => {
    // Static keys the checker never touches, so the moved count can be compared with the ring.
    const filler = await putFiller(kv, 3000, 300);

    const checker = new Checker([cluster.address, secondAddress], 8, 100);
    checker.start(150_000);
    await new Promise((r) => setTimeout(r, 1000));

    // 3 → 5
    const w3 = await cluster.startWorker('worker-3');
    const w4 = await cluster.startWorker('worker-4');
    const a = admin(cluster.address);
    const during = await a.add([
      { name: 'worker-3', address: `127.0.0.1:${w3.listening!.port}` },
      { name: 'worker-4', address: `127.0.0.1:${w4.listening!.port}` },
    ]);
    expect(during.phase).toBe('migrating');
    expect(during.workers.filter((w) => w.role === 'joining').map((w) => w.name)).toEqual(['worker-3', 'worker-4']);
    // A second change while keys move is refused, not queued behind it.
    await expect(a.remove(['worker-0'])).rejects.toMatchObject({ code: grpc.status.FAILED_PRECONDITION });
    const up = await waitStable(cluster.address);
    expect(up.members.map((m) => m.name)).toEqual(['worker-0', 'worker-1', 'worker-2', 'worker-3', 'worker-4']);
    const moved1 = up.keys_moved + (await admin(secondAddress).status()).keys_moved;

    const ring3 = new Ring(['worker-0', 'worker-1', 'worker-2']);
    const ring5 = new Ring(['worker-0', 'worker-1', 'worker-2', 'worker-3', 'worker-4']);
    const ring2 = new Ring(['worker-0', 'worker-1']);
    const predicted1 = filler.filter((k) => ring3.owner(k) !== ring5.owner(k)).length;

    // 5 → 2
    const down = await a.remove(['worker-2', 'worker-3', 'worker-4']);
    expect(down.workers.filter((w) => w.role === 'leaving').map((w) => w.name)).toEqual(['worker-2', 'worker-3', 'worker-4']);
    const done = await waitStable(cluster.address);
    a.close();
    expect(done.members.map((m) => m.name)).toEqual(['worker-0', 'worker-1']);
    // The removed workers own nothing and know it: they may be stopped.
    for (const name of ['worker-2', 'worker-3', 'worker-4']) {
      expect(await scanWorkerKeys(cluster.worker(name).listening!.port)).toEqual([]);
    }

    const report = await checker.stop();
    const present = await checker.verifyAll(secondAddress);
    checker.close();
    const listed = (await kv.list()).filter((k) => k.startsWith('chk/'));
    console.log('rebalance checker', JSON.stringify({ ...report, mismatches: report.mismatches.length, lostWrites: report.lostWrites.length, resurrections: report.resurrections.length, moved1, predicted1 }));
    expect(report.lostWrites).toEqual([]);
    expect(report.resurrections).toEqual([]);
    expect(report.mismatches).toEqual([]);
    expect(report.ops).toBeGreaterThan(500);
    expect(listed).toEqual(present);

    // Every static key is readable and lives exactly where the final ring puts it.
    expect(await getAll(kv, filler, 300)).toEqual(filler.map((k) => `f:${k}`));
    for (const name of ['worker-0', 'worker-1']) {
      const held = (await scanWorkerKeys(cluster.worker(name).listening!.port)).filter((k) => k.startsWith('fill/'));
      expect(held).toEqual(filler.filter((k) => ring2.owner(k) === name).sort());
    }
    // Moves on 3 → 5: only keys whose owner changed; checker keys add a little on top.
    expect(moved1).toBeGreaterThanOrEqual(predicted1 * 0.97);
    expect(moved1).toBeLessThanOrEqual(predicted1 + 8 * 100);

    // The gateway's per-worker gauges name the members only: a removed worker left as worker_up 0
    // would keep the KvWorkerDown alert firing (its link's late close used to write the series back).
    const res = await fetch(`http://127.0.0.1:${cluster.gateway.listening!.metricsPort}/metrics`, { signal: AbortSignal.timeout(5000) });
    const text = await res.text();
    for (const gauge of ['kv_gateway_worker_up', 'kv_gateway_worker_inflight']) {
      const workers = [...text.matchAll(new RegExp(`^${gauge}\\{worker="([^"]+)"\\} (\\S+)$`, 'gm'))].map((m) => `${m[1]}=${m[2]}`);
      expect(workers.map((w) => w.split('=')[0]).sort()).toEqual(['worker-0', 'worker-1']);
      if (gauge === 'kv_gateway_worker_up') expect(workers.sort()).toEqual(['worker-0=1', 'worker-1=1']);
    }
  }, 300_000);
});
