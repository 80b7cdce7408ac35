// A worker's snapshot belongs to one membership epoch. If the membership changes while the snapshot
// is being taken (a migration starts), the worker refuses it after the fact and deletes the files it
// wrote, so nothing (not even kvctl restore --from-parts) can rebuild a set that mixes two rings.
// A real worker process with a database big enough that the snapshot takes a while.
import { existsSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import * as grpc from '@grpc/grpc-js';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { snapshot } from '../gateway/worker-rpc.js';
import { newBackupId } from '../shared/backup-sets.js';
import { OpType } from '../shared/proto.js';
import { exchange, startLoneWorker, type LoneWorker } from './helpers/worker-client.js';

let worker: LoneWorker;

beforeAll(async () => {
  worker = await startLoneWorker('kvstore-fence-');
});

afterAll(async () => {
  await worker?.stop();
});

describe('snapshot fence', () => {
  it('refuses and deletes a snapshot during which the membership changed', async () => {
    const self = { name: 'worker-0', address: '127.0.0.1:1' };
    expect((await worker.install({ epoch: 1, members: [self], previous: null })).applied).toBe(true);
    // ~60 MB: VACUUM INTO, integrity_check and the checksum take a good fraction of a second.
    const value = 'v'.repeat(600);
    for (let b = 0; b < 20; b++) {
      const results = await exchange(worker.port, 1, Array.from({ length: 5000 }, (_, i) => ({ id: i + 1, type: OpType.PUT, key: `fence/${b}/${i}`, value })));
      expect(results.every((r) => r.code === grpc.status.OK)).toBe(true);
    }

    const id = newBackupId();
    const taking = snapshot(worker.client, 'worker-0', id, 1, 60_000).then(
      () => 'kept',
      (err: Error) => err.message,
    );
    await new Promise((r) => setTimeout(r, 30));
    // A migration starts while the snapshot runs.
    expect((await worker.install({ epoch: 2, members: [self, { name: 'worker-1', address: '127.0.0.1:2' }], previous: [self] })).applied).toBe(true);
    expect(await taking).toMatch(/FAILED_PRECONDITION: worker worker-0 is at membership epoch 2, not the backup's 1.*changed while the snapshot was taken/);
    const setDir = join(worker.dir, 'backups', id);
    expect(existsSync(setDir) ? readdirSync(setDir) : []).toEqual([]);
  });
});
