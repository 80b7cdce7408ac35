// A request refused by a worker whose gRPC channel is still reconnecting (it restarted; the exchange
// came back first) waits once for that channel in its first membership refresh (gateway/cluster.ts
// refresh(refusedBy)). Refreshes are shared: a request refused while another refresh is running, one
// that does not wait for that worker (the mover's, another request's retry, ListKeys, a backup), joined
// it and lost its wait, then spent its retries on refreshes that asked its refuser nothing, and failed
// in milliseconds. Now, when that refresh got no answer from the worker, one more refresh waits for it.
//
// In process: a Cluster whose one worker is reached through a relay that passes the exchange but
// closes gRPC connections (after 50 ms, so that the other refresh is still running when the refusal
// comes), with the worker's membership moved one epoch ahead behind the cluster's back.
import { afterAll, beforeAll, expect, it } from 'vitest';
import { Cluster } from '../gateway/cluster.js';
import { createLogger } from '../shared/logger.js';
import { OpType } from '../shared/proto.js';
import { ExchangeOnlyRelay } from './helpers/exchange-relay.js';
import { startLoneWorker, type LoneWorker } from './helpers/worker-client.js';

let worker: LoneWorker;
let relay: ExchangeOnlyRelay;
let cluster: Cluster;
beforeAll(async () => {
  worker = await startLoneWorker('kvstore-review-coalesce-');
  // Refused gRPC connections close after 50 ms, so that the other refresh is still running when the
  // refusal comes.
  relay = await ExchangeOnlyRelay.start(worker.port, 50);
  cluster = new Cluster([{ name: 'worker-0', address: `127.0.0.1:${relay.port}` }], { link: { timeoutMs: 2000, maxInflight: 1000 }, controlTimeoutMs: 2000 }, createLogger('gw', 'silent'));
  await cluster.bootstrap();
}, 60_000);
afterAll(async () => {
  await cluster?.close(0);
  relay?.close();
  await worker?.stop();
});

for (const withHintless of [false, true]) {
  it(`gRPC back after 500 ms, ${withHintless ? 'another refresh running' : 'no other refresh'} when the request is refused: the request succeeds`, async () => {
    relay.refuseGrpc();
    await worker.advanceEpoch();
    const back = setTimeout(() => relay.allowGrpc(), 500);
    const t0 = Date.now();
    const request = cluster.execute(OpType.PUT, 'k', `v${withHintless}`);
    const other = withHintless ? cluster.refresh() : Promise.resolve();
    const routed = await request;
    await other.catch(() => undefined);
    clearTimeout(back);
    expect(routed.r.code, `${routed.r.message} (after ${Date.now() - t0} ms)`).toBe(0);
  }, 20_000);
}
