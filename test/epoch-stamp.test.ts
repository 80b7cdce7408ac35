// A batch to a worker carries the membership epoch its ops were routed with. A gateway still on the
// old epoch when a migration starts routes a Get to the key's old owner; if it installs the new epoch
// before that Get's batch is flushed (same event-loop turn: a refresh answered in the poll phase, the
// flush on setImmediate), a batch stamped with the new epoch made the old owner accept the Get as the
// key's previous owner and answer from its stale copy, although the key had been written on its new
// owner. Stamped with its routing epoch, the Get is refused and retried on the new membership.
// In-process gateway Clusters (gateway/cluster.ts, the routing a gateway runs) drive real worker
// processes; no mover runs, so the old owner keeps its copy for the whole test.
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import * as grpc from '@grpc/grpc-js';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Cluster } from '../gateway/cluster.js';
import { WorkerLink } from '../gateway/worker-link.js';
import { createLogger } from '../shared/logger.js';
import { OpType, type OpResult } from '../shared/proto.js';
import { Ring } from '../shared/ring.js';
import { TestCluster } from './helpers/processes.js';

const NAMES = ['worker-0', 'worker-1', 'worker-2'];
const log = createLogger('test', 'silent');
let procs: TestCluster;
const gateways: Cluster[] = [];

beforeAll(async () => {
  procs = new TestCluster(mkdtempSync(join(tmpdir(), 'kvstore-epoch-stamp-')), true, {});
  for (const n of NAMES) await procs.startWorker(n);
});

afterAll(async () => {
  for (const g of gateways) await g.close(0);
  await procs?.stop();
});

const member = (name: string) => ({ name, address: `127.0.0.1:${procs.worker(name).listening!.port}` });

function gatewayCluster(): Cluster {
  const c = new Cluster(NAMES.slice(0, 2).map(member), { link: { timeoutMs: 5000, maxInflight: 10_000 }, controlTimeoutMs: 2000 }, log);
  gateways.push(c);
  return c;
}

const route = (c: Cluster, key: string): Promise<OpResult | string> =>
  new Promise((resolve) => c.route(OpType.GET, key, '', (err, r) => resolve(err ? String(err) : r!)));

describe('epoch stamping of batches', () => {
  it('a Get routed before a migration starts, flushed after the gateway learns of it, is not answered by the old owner', async () => {
    const ring2 = new Ring(NAMES.slice(0, 2));
    const ring3 = new Ring(NAMES);
    let key = '';
    for (let i = 0; !key; i++) if (ring3.owner(`stamp/${i}`) === 'worker-2') key = `stamp/${i}`;
    const oldOwner = ring2.owner(key);

    const fresh = gatewayCluster();
    const stale = gatewayCluster();
    await fresh.bootstrap();
    await stale.bootstrap();
    expect((await fresh.execute(OpType.PUT, key, 'before the migration')).worker).toBe(oldOwner);

    // Another gateway adds worker-2: every worker is at the new epoch, the key moves to worker-2, and
    // a write lands there. The stale gateway has not heard of it.
    await fresh.change([member('worker-2')], []);
    const put = await fresh.execute(OpType.PUT, key, 'on the new owner');
    expect(put).toMatchObject({ worker: 'worker-2', r: { code: grpc.status.OK } });
    expect(stale.epoch).toBe(fresh.epoch - 1);

    // One Get per event-loop turn through the stale gateway. The first is refused (old epoch), which
    // makes it refresh; whichever turn the refresh completes in, the Get routed in the turn before is
    // still queued then.
    const gets: Promise<OpResult | string>[] = [];
    await new Promise<void>((resolve) => {
      let after = 0;
      const tick = (): void => {
        gets.push(route(stale, key));
        if (stale.epoch === fresh.epoch) after++;
        if (after >= 3 || gets.length >= 5000) resolve();
        else setImmediate(tick);
      };
      tick();
    });
    expect(stale.epoch).toBe(fresh.epoch);
    const answers = await Promise.all(gets);
    const wrong = answers.filter((a) => typeof a === 'string' || a.code !== grpc.status.OK || a.value !== 'on the new owner');
    console.log(`FIGURES epoch-stamp ${JSON.stringify({ gets: answers.length, wrong: wrong.length })}`);
    expect(wrong.map((a) => (typeof a === 'string' ? a : `${grpc.status[a.code]} ${JSON.stringify(a.value)}`))).toEqual([]);
  });

  it('a link stamps an op with the epoch it was given, not the epoch when its batch is flushed', async () => {
    const c = gatewayCluster();
    await c.bootstrap();
    const epoch = c.epoch;
    let key = '';
    for (let i = 0; !key; i++) if (c.ring.owner(`stamp/link/${i}`) === 'worker-0') key = `stamp/link/${i}`;
    let now = epoch;
    const link = new WorkerLink('worker-0', member('worker-0').address, { timeoutMs: 5000, maxInflight: 100, epoch: () => now });
    try {
      const given = link.call(OpType.GET, key, '', epoch);
      const byDefault = link.call(OpType.GET, key, '');
      now = epoch + 1; // the gateway installs a newer membership before the flush
      const [a, b] = await Promise.all([given, byDefault]);
      expect([a.code, b.code]).toEqual([grpc.status.NOT_FOUND, grpc.status.NOT_FOUND]);
      // Ops of two epochs in one turn go in two batches, each judged by its own epoch.
      const [d, e] = await Promise.all([link.call(OpType.GET, key, '', epoch + 1), link.call(OpType.GET, key, '', epoch)]);
      expect([d.code, e.code]).toEqual([grpc.status.FAILED_PRECONDITION, grpc.status.NOT_FOUND]);
    } finally {
      await link.close();
    }
  });
});
