// A migration has just started: the new epoch is on the leader and the gateway routing with it, but
// propagation to the key's old owner has not landed yet (that worker was briefly unreachable). A
// gateway still on the old epoch must not be able to write the key on its old owner after a newer
// Delete: the mover would see the Delete's tombstone on the new owner and drop that write, losing
// an acknowledged Put. Two in-process gateway Clusters (gateway/cluster.ts, the routing a gateway
// runs) drive real worker processes; a real gateway process then finishes the migration.
// Also: a gateway that slept through a whole migration (a worker added, then the migration ended)
// brings the added worker up to the newest state if that worker missed it.
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import * as grpc from '@grpc/grpc-js';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Cluster } from '../gateway/cluster.js';
import { setMembership, workerStatus } from '../gateway/worker-rpc.js';
import { createLogger } from '../shared/logger.js';
import { encodeState, type MemberSpec, type MembershipState } from '../shared/membership.js';
import { OpType, workerApi } from '../shared/proto.js';
import { Ring } from '../shared/ring.js';
import { waitStable } from './helpers/admin.js';
import { kvClient } from './helpers/client.js';
import { TestCluster } from './helpers/processes.js';

const NAMES = ['worker-0', 'worker-1', 'worker-2', 'worker-3'];
const log = createLogger('test', 'silent');
let procs: TestCluster;
const gateways: Cluster[] = [];

function gatewayCluster(members: MemberSpec[]): Cluster {
  const c = new Cluster(members, { link: { timeoutMs: 5000, maxInflight: 1000 }, controlTimeoutMs: 500 }, log);
  gateways.push(c);
  return c;
}

beforeAll(async () => {
  procs = new TestCluster(mkdtempSync(join(tmpdir(), 'kvstore-stale-')), true, {});
  for (const n of NAMES) await procs.startWorker(n);
});

afterAll(async () => {
  for (const w of procs?.workers.values() ?? []) w.kill('SIGCONT');
  for (const g of gateways) await g.close(0);
  await procs?.stop();
});

describe('a gateway that missed a whole migration', () => {
  it('brings a worker the newer state added, and which missed its end, up to date', async () => {
    const others = new TestCluster(mkdtempSync(join(tmpdir(), 'kvstore-stale-')), true, {});
    const clients: grpc.Client[] = [];
    try {
      for (const n of NAMES) await others.startWorker(n);
      const members = NAMES.map((name) => ({ name, address: `127.0.0.1:${others.worker(name).listening!.port}` }));
      for (const m of members) clients.push(new (workerApi().Worker)(m.address, grpc.credentials.createInsecure()));
      // This gateway knows the first three workers, at epoch 1.
      const gateway = gatewayCluster(members.slice(0, 3));
      await gateway.bootstrap();
      expect(gateway.epoch).toBe(1);
      // Meanwhile another gateway adds worker-3 (epoch 2) and ends the migration (epoch 3), but the
      // push of epoch 3 never reaches worker-3.
      const set = (i: number, state: MembershipState, expected: number) =>
        setMembership(clients[i], NAMES[i], { expected_epoch: expected, state_json: encodeState(state), propagate: expected === 0 }, 5000);
      const migrating: MembershipState = { epoch: 2, members, previous: members.slice(0, 3) };
      const stable: MembershipState = { epoch: 3, members, previous: null };
      expect((await set(0, migrating, 1)).applied).toBe(true);
      for (const i of [1, 2, 3]) await set(i, migrating, 0);
      expect((await set(0, stable, 2)).applied).toBe(true);
      for (const i of [1, 2]) await set(i, stable, 0);

      await gateway.refresh();
      expect(gateway.epoch).toBe(3);
      // Left at epoch 2, worker-3 would refuse this gateway's requests (and its Backup's snapshot).
      expect(Number((await workerStatus(clients[3], 'worker-3', 5000)).epoch)).toBe(3);
    } finally {
      for (const c of clients) c.close();
      await others.stop();
    }
  });
});

describe('a gateway on the old epoch, right after a migration starts', () => {
  it('cannot write a moving key on its old owner after a newer Delete', async () => {
    const members = NAMES.map((name) => ({ name, address: `127.0.0.1:${procs.worker(name).listening!.port}` }));
    const ring4 = new Ring(NAMES);
    const ring3 = new Ring(NAMES.slice(0, 3));
    let key = '';
    for (let i = 0; !key; i++) if (ring4.owner(`stale/${i}`) === 'worker-3' && ring3.owner(`stale/${i}`) !== 'worker-3') key = `stale/${i}`;

    const fresh = gatewayCluster(members);
    const stale = gatewayCluster(members);
    await fresh.bootstrap();
    await stale.bootstrap();
    expect((await fresh.execute(OpType.PUT, key, 'first')).r.code).toBe(grpc.status.OK);

    // Start removing worker-3 the way Cluster.commit does, except that the push to worker-3 is lost:
    // compare-and-set on the leader (worker-0), then the other workers.
    const next: MembershipState = { epoch: fresh.epoch + 1, members: members.slice(0, 3), previous: members };
    const client = (name: string) => new (workerApi().Worker)(members.find((m) => m.name === name)!.address, grpc.credentials.createInsecure());
    const clients = NAMES.map(client);
    try {
      const cas = await setMembership(clients[0], 'worker-0', { expected_epoch: fresh.epoch, state_json: encodeState(next), propagate: false }, 5000);
      expect(cas.applied).toBe(true);
      for (const i of [1, 2]) await setMembership(clients[i], NAMES[i], { expected_epoch: 0, state_json: encodeState(next), propagate: true }, 5000);
      // The fresh gateway learns the new epoch while worker-3 cannot answer, so nobody brings it along.
      procs.worker('worker-3').kill('SIGSTOP');
      try {
        await fresh.refresh();
      } finally {
        procs.worker('worker-3').kill('SIGCONT');
      }
      expect(fresh.epoch).toBe(next.epoch);
      expect(stale.epoch).toBe(next.epoch - 1);
      expect(Number((await workerStatus(clients[3], 'worker-3', 5000)).epoch)).toBe(next.epoch - 1);

      // The Delete through the fresh gateway visits the old owner first, which brings it to the new epoch.
      expect((await fresh.execute(OpType.DELETE, key, '')).r.code).toBe(grpc.status.OK);
      expect(Number((await workerStatus(clients[3], 'worker-3', 5000)).epoch)).toBe(next.epoch);

      // So the stale gateway's Put is refused on the old owner, and lands on the new owner after a refresh.
      const put = await stale.execute(OpType.PUT, key, 'after the delete');
      expect(put.r.code).toBe(grpc.status.OK);
      expect(put.worker).toBe(ring3.owner(key));
      expect((await fresh.execute(OpType.GET, key, '')).r).toMatchObject({ code: grpc.status.OK, value: 'after the delete' });
    } finally {
      for (const c of clients) c.close();
    }

    // A real gateway finishes the migration; the acknowledged Put survives it.
    await procs.startGateway();
    await waitStable(procs.address, 60_000);
    const kv = kvClient(procs.address);
    try {
      expect(await kv.get(key)).toBe('after the delete');
    } finally {
      kv.close();
    }
  });
});
