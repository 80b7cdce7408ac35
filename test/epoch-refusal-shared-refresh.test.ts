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
import { createServer, connect, type Server, type Socket } from 'node:net';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { Cluster } from '../gateway/cluster.js';
import { getMembership } from '../gateway/worker-rpc.js';
import { MAGIC } from '../shared/exchange-codec.js';
import { createLogger } from '../shared/logger.js';
import { decodeState } from '../shared/membership.js';
import { OpType } from '../shared/proto.js';
import { startLoneWorker, type LoneWorker } from './helpers/worker-client.js';

class Relay {
  server!: Server;
  all = new Set<Socket>();
  grpcSockets = new Set<Socket>();
  grpcRefused = false;
  refuseAfterMs = 0;
  port = 0;
  static async start(port: number): Promise<Relay> {
    const r = new Relay();
    r.server = createServer((client) => {
      r.all.add(client);
      client.on('error', () => undefined);
      client.once('data', (first: Buffer) => {
        const exchange = first.subarray(0, MAGIC.length).equals(MAGIC);
        if (!exchange && r.grpcRefused) return void setTimeout(() => client.destroy(), r.refuseAfterMs);
        const up = connect(port, '127.0.0.1');
        r.all.add(up);
        up.on('error', () => undefined);
        if (!exchange) r.grpcSockets.add(client);
        up.write(first);
        client.pipe(up);
        up.pipe(client);
        client.on('close', () => up.destroy());
        up.on('close', () => client.destroy());
      });
    });
    await new Promise<void>((res) => r.server.listen(0, '127.0.0.1', res));
    r.port = (r.server.address() as { port: number }).port;
    return r;
  }
  refuse(): void {
    this.grpcRefused = true;
    for (const s of this.grpcSockets) s.destroy();
  }
  close(): void {
    for (const s of this.all) s.destroy();
    this.server.close();
  }
}

let worker: LoneWorker;
let relay: Relay;
let cluster: Cluster;
beforeAll(async () => {
  worker = await startLoneWorker('kvstore-review-coalesce-');
  relay = await Relay.start(worker.port);
  cluster = new Cluster([{ name: 'worker-0', address: `127.0.0.1:${relay.port}` }], { link: { timeoutMs: 2000, maxInflight: 1000 }, controlTimeoutMs: 2000 }, createLogger('gw', 'silent'));
  await cluster.bootstrap();
}, 60_000);
afterAll(async () => {
  await cluster?.close(0);
  relay?.close();
  await worker?.stop();
});

async function bumpBehindGatewaysBack(): Promise<void> {
  relay.refuse();
  const stored = decodeState((await getMembership(worker.client, 'worker-0', 5000)).state_json);
  await worker.install({ ...stored, epoch: stored.epoch + 1 });
}

for (const withHintless of [false, true]) {
  it(`gRPC back after 500 ms, ${withHintless ? 'another refresh running' : 'no other refresh'} when the request is refused: the request succeeds`, async () => {
    await bumpBehindGatewaysBack();
    relay.refuseAfterMs = 50;
    const back = setTimeout(() => (relay.grpcRefused = false), 500);
    const t0 = Date.now();
    const request = cluster.execute(OpType.PUT, 'k', `v${withHintless}`);
    const other = withHintless ? cluster.refresh() : Promise.resolve();
    const routed = await request;
    await other.catch(() => undefined);
    clearTimeout(back);
    expect(routed.r.code, `${routed.r.message} (after ${Date.now() - t0} ms)`).toBe(0);
  }, 20_000);
}
