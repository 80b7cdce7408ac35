// Tombstones belong to one migration. A worker that misses the stable epoch ending a migration (it
// was unreachable when it was pushed) and next installs a later migration must not carry the old
// tombstones into it: the mover's COPY never passes a tombstone, so a stale one would make it skip a
// live key, which the old owner then drops. A real worker process, driven through its internal API.
import * as grpc from '@grpc/grpc-js';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { OpType, type OpResult, type OpTypeValue } from '../shared/proto.js';
import { Ring } from '../shared/ring.js';
import { exchange, startLoneWorker, type LoneWorker } from './helpers/worker-client.js';

let worker: LoneWorker;

beforeAll(async () => {
  worker = await startLoneWorker('kvstore-tomb-');
});

afterAll(async () => {
  await worker?.stop();
});

/** One op through the exchange, at `epoch`. */
const op = async (epoch: number, type: OpTypeValue, key: string, value = ''): Promise<OpResult> => (await exchange(worker.port, epoch, [{ id: 1, type, key, value }]))[0];

describe('tombstones across migrations', () => {
  it('a worker that missed the stable epoch starts the next migration without the old tombstones', async () => {
    const m = (name: string) => ({ name, address: `127.0.0.1:${1 + Number(name.slice(-1))}` });
    // A key that moves from worker-2 to worker-0 at epoch 2 (worker-0 added to [worker-2]) and from
    // worker-1 to worker-0 at epoch 4 ([worker-0, worker-1] down to [worker-0]).
    const first = new Ring(['worker-0', 'worker-2']);
    const second = new Ring(['worker-0', 'worker-1']);
    let key = '';
    for (let i = 0; !key; i++) if (first.owner(`tomb/${i}`) === 'worker-0' && second.owner(`tomb/${i}`) === 'worker-1') key = `tomb/${i}`;
    expect((await worker.install({ epoch: 2, members: [m('worker-0'), m('worker-2')], previous: [m('worker-2')] })).applied).toBe(true);
    // A client deletes the moving key during that migration: a tombstone on its new owner.
    expect((await op(2, OpType.DELETE, key)).code).toBe(grpc.status.OK);
    // The tombstone works within its migration: the mover's older copy is skipped (found: a record is there).
    expect((await op(2, OpType.COPY, key, 'old copy')).found).toBe(true);

    // Epoch 3 (stable [worker-0, worker-2]) never reaches this worker. Later the key lives on worker-1
    // (written after the delete), and epoch 4 moves it from there back to worker-0.
    expect((await worker.install({ epoch: 4, members: [m('worker-0')], previous: [m('worker-0'), m('worker-1')] })).applied).toBe(true);
    const copied = await op(4, OpType.COPY, key, 'written later');
    expect(copied).toMatchObject({ code: grpc.status.OK, found: false });
    expect((await op(4, OpType.GET, key)).value).toBe('written later');
  });
});
