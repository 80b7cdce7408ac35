// A Backup must describe one ring with every key in it. While keys move between workers a set would
// miss the keys already dropped by their old owner (and leave out the new worker), so it is refused:
// by a gateway that has not heard of the migration yet (another gateway started it), and by the
// workers themselves for a snapshot asked at another epoch or while keys move.
import { join } from 'node:path';
import Database from 'better-sqlite3';
import * as grpc from '@grpc/grpc-js';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { verifySet } from '../cli/restore.js';
import { snapshot } from '../gateway/worker-rpc.js';
import { newBackupId } from '../shared/backup-sets.js';
import { workerApi, type BackupStatus } from '../shared/proto.js';
import { admin, waitStable } from './helpers/admin.js';
import { kvClient, putFiller, type KvClient } from './helpers/client.js';
import { TestCluster } from './helpers/processes.js';

let cluster: TestCluster;
let first: KvClient;
let second: KvClient;
let secondAddress: string;

beforeAll(async () => {
  // Slow moves, so the migration is still running when the Backup arrives.
  cluster = await TestCluster.start({ workers: 3, gatewayArgs: ['--migration-rate', '100'] });
  secondAddress = (await cluster.startExtraGateway()).address;
  first = kvClient(cluster.address, 60_000);
  second = kvClient(secondAddress, 60_000);
});

afterAll(async () => {
  first?.close();
  second?.close();
  await cluster?.stop();
});

function workerClient(name: string): grpc.Client {
  return new (workerApi().Worker)(`127.0.0.1:${cluster.worker(name).listening!.port}`, grpc.credentials.createInsecure());
}

describe('backup and migration', () => {
  it('is refused while keys move, even through a gateway that did not start the migration', async () => {
    const keys = await putFiller(first, 2000, 200);
    const before = await admin(cluster.address).status();
    const w3 = await cluster.startWorker('worker-3');
    const during = await admin(cluster.address).add([{ name: 'worker-3', address: `127.0.0.1:${w3.listening!.port}` }]);
    expect(during.phase).toBe('migrating');

    // The second gateway has not routed anything since, so it has not been told of the new epoch.
    const r = (await second.backup()) as BackupStatus;
    expect(r.success, r.message).toBe(false);
    expect(r.message).toMatch(/not taken: workers are being added or removed \(epoch \d+\)/);
    expect(r.backup_id).toBe('');

    // The workers' own fence: a snapshot asked at the old epoch, or at the new one while keys move.
    const w0 = workerClient('worker-0');
    try {
      await expect(snapshot(w0, 'worker-0', newBackupId(), Number(before.epoch), 10_000)).rejects.toMatchObject({
        code: grpc.status.FAILED_PRECONDITION,
        message: expect.stringMatching(/at membership epoch \d+, not the backup's \d+/),
      });
      await expect(snapshot(w0, 'worker-0', newBackupId(), Number(during.epoch), 10_000)).rejects.toMatchObject({
        code: grpc.status.FAILED_PRECONDITION,
        message: expect.stringMatching(/keys are moving between workers/),
      });
    } finally {
      w0.close();
    }

    // After the migration the same gateway takes a set of the new ring holding every key.
    const stable = await waitStable(cluster.address, 60_000);
    const ok = (await second.backup()) as BackupStatus;
    expect(ok.success, ok.message).toBe(true);
    const { manifest } = verifySet(ok.location);
    expect(manifest.epoch).toBe(Number(stable.epoch));
    expect(manifest.ring.members).toEqual(['worker-0', 'worker-1', 'worker-2', 'worker-3']);
    const inSet = new Set<string>();
    for (const w of manifest.workers) {
      const db = new Database(join(ok.location, w.file), { readonly: true });
      try {
        for (const k of db.prepare('SELECT key FROM kv').pluck().iterate() as IterableIterator<string>) inSet.add(k);
      } finally {
        db.close();
      }
    }
    expect(keys.filter((k) => !inSet.has(k))).toEqual([]);
  });
});
