// A migration survives its participants failing: a source worker is killed with SIGKILL and a
// gateway is killed and restarted while keys move; the migration resumes and completes with the
// same guarantees (nothing acknowledged lost, no delete resurrected, keys where the ring says).
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Ring } from '../shared/ring.js';
import { admin, waitStable } from './helpers/admin.js';
import { Checker } from './helpers/checker.js';
import { getAll, kvClient, putFiller, type KvClient } from './helpers/client.js';
import { Proc, TestCluster, waitFor } from './helpers/processes.js';
import { scanWorkerKeys } from './helpers/worker-client.js';

let cluster: TestCluster;
let second: Proc;
let secondAddress: string;
let kv: KvClient;
// Slow enough that the faults land while keys are still moving.
const RATE = ['--migration-rate', '300'];

beforeAll(async () => {
  cluster = await TestCluster.start({ workers: 3, gatewayArgs: RATE });
  ({ proc: second, address: secondAddress } = await cluster.startExtraGateway());
  kv = kvClient(secondAddress, 30_000);
});

afterAll(async () => {
  kv?.close();
  await cluster?.stop();
});

describe('migration under faults', () => {
  it('resumes after a source worker is SIGKILLed and a gateway is SIGKILLed mid-migration', async () => {
    const filler = await putFiller(kv, 4000, 400);
    const checker = new Checker([cluster.address, secondAddress], 6, 100);
    checker.start(150_000);

    const w3 = await cluster.startWorker('worker-3');
    const a = admin(secondAddress);
    await a.add([{ name: 'worker-3', address: `127.0.0.1:${w3.listening!.port}` }]);
    // Both gateways run a mover, and each counts only the keys it copied itself; which one gets
    // ahead varies from run to run (either may move every key), so the migration's progress is the sum.
    const first = admin(cluster.address);
    await waitFor('some keys to move', async () => (await first.status()).keys_moved + (await a.status()).keys_moved > 50, 30_000, 100);
    first.close();

    // A source worker dies mid-migration and comes back (same name, same port).
    cluster.worker('worker-1').kill('SIGKILL');
    await cluster.worker('worker-1').exited();
    await new Promise((r) => setTimeout(r, 500));
    await cluster.startWorker('worker-1');
    expect((await a.status()).phase).toBe('migrating');

    // The first gateway dies mid-migration and restarts: it learns the migration from the workers.
    cluster.gateway.kill('SIGKILL');
    await cluster.gateway.exited();
    await cluster.startGateway();
    const resumed = await admin(cluster.address).status();
    expect(resumed.epoch).toBeGreaterThanOrEqual(2);

    const done = await waitStable(secondAddress, 120_000).catch((err: unknown) => {
      // The logs say which step of the migration keeps failing.
      console.error(['gateway-1', cluster.gateway.output.join('').slice(-6000), 'gateway-2', second.output.join('').slice(-6000)].join('\n'));
      throw err;
    });
    a.close();
    expect(done.members.map((m) => m.name)).toEqual(['worker-0', 'worker-1', 'worker-2', 'worker-3']);

    const report = await checker.stop();
    const present = await checker.verifyAll(secondAddress);
    checker.close();
    console.log('rebalance-faults checker', JSON.stringify({ ...report, mismatches: report.mismatches.length, lostWrites: report.lostWrites.length, resurrections: report.resurrections.length }));
    expect(report.lostWrites).toEqual([]);
    expect(report.resurrections).toEqual([]);
    expect(report.mismatches).toEqual([]);
    expect((await kv.list()).filter((k) => k.startsWith('chk/'))).toEqual(present);

    const ring4 = new Ring(['worker-0', 'worker-1', 'worker-2', 'worker-3']);
    expect(await getAll(kv, filler, 400)).toEqual(filler.map((k) => `f:${k}`));
    for (const name of ['worker-0', 'worker-1', 'worker-2', 'worker-3']) {
      const held = (await scanWorkerKeys(cluster.worker(name).listening!.port)).filter((k) => k.startsWith('fill/'));
      expect(held, `fill keys on ${name}`).toEqual(filler.filter((k) => ring4.owner(k) === name).sort());
    }
  }, 300_000);
});
