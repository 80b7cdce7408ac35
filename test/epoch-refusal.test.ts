// A worker that keeps refusing a request's membership epoch, and that the gateway cannot reach to
// agree on the membership, must not hand the client FAILED_PRECONDITION: an internal status the
// public contract does not list. After its retries the gateway answers UNAVAILABLE, naming the
// worker and saying nothing was applied, so the client retries. Seen in test/linearizable.test.ts
// (2 calls of ~4,000) right after a worker and a gateway were restarted mid-migration. And when the
// worker's gRPC comes back soon, as after a restart, the gateway's refresh waits for it and the
// request succeeds.
//
// To hold the refusal: the worker's one port is reached through a relay that passes the gateway's
// exchange connection (which starts with the exchange's magic bytes) but, once switched, closes
// every gRPC connection, so the gateway's membership refreshes fail; and the worker's membership is
// moved one epoch ahead behind the gateway's back.
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { OpType } from '../shared/proto.js';
import { errorOf, grpc, kvClient } from './helpers/client.js';
import { ExchangeOnlyRelay } from './helpers/exchange-relay.js';
import { Proc, dist } from './helpers/processes.js';
import { exchange, startLoneWorker, type LoneWorker } from './helpers/worker-client.js';

let worker: LoneWorker;
let relay: ExchangeOnlyRelay;
let gateway: Proc;
let dir: string;

beforeAll(async () => {
  worker = await startLoneWorker('kvstore-epoch-refusal-');
  relay = await ExchangeOnlyRelay.start(worker.port);
  dir = mkdtempSync(join(tmpdir(), 'kvstore-epoch-refusal-gw-'));
  gateway = new Proc(dist('gateway/main.js'), [
    '--host', '127.0.0.1', '--port', '0', '--metrics-port', '0', '--data-dir', dir,
    '--members', `worker-0=127.0.0.1:${relay.port}`, '--request-timeout-ms', '2000',
  ]);
  await gateway.start();
}, 60_000);

afterAll(async () => {
  await gateway?.stop();
  relay?.close();
  await worker?.stop();
  if (dir) rmSync(dir, { recursive: true, force: true });
});

describe('a worker that keeps refusing the epoch', () => {
  it('gives the client UNAVAILABLE naming the worker, not FAILED_PRECONDITION, and applies nothing', async () => {
    const kv = kvClient(`127.0.0.1:${gateway.listening!.port}`, 10_000);
    try {
      expect(await kv.put('k', 'before')).toBe('');

      relay.refuseGrpc();
      await worker.advanceEpoch();

      const err = await errorOf(kv.put('k', 'refused'));
      expect(grpc.status[err.code]).toBe('UNAVAILABLE');
      expect(err.details).toContain('worker-0');
      expect(err.details).toMatch(/epoch/);
      expect(err.details).toMatch(/not applied/);
      const getErr = await errorOf(kv.get('k'));
      expect(grpc.status[getErr.code]).toBe('UNAVAILABLE');
    } finally {
      kv.close();
    }
    // Nothing was applied: the worker still holds the value from before (read at its own epoch, 0).
    const [r] = await exchange(worker.port, 0, [{ id: 1, type: OpType.GET, key: 'k', value: '' }]);
    expect(r.value).toBe('before');
  });

  it('is waited out when the worker answers its gRPC again soon: the request then succeeds', async () => {
    // As when a worker restarts: its exchange connection is back before the gateway's gRPC channel
    // to it has left reconnect backoff. The refresh waits for that channel, briefly.
    await worker.advanceEpoch();
    const kv = kvClient(`127.0.0.1:${gateway.listening!.port}`, 10_000);
    const back = setTimeout(() => relay.allowGrpc(), 500);
    try {
      expect(await kv.put('k', 'after')).toBe('before');
      expect(await kv.get('k')).toBe('after');
    } finally {
      clearTimeout(back);
      kv.close();
    }
  });
});
