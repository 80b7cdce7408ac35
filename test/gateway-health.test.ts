// The gateway's two health answers mean different things: `kvstore.KeyValueStore` (readiness) is
// SERVING only once the membership is known, while "" (liveness) says the process is alive. On a first
// install the membership needs every seed worker: a gateway whose liveness failed while it waited for
// a worker still being scheduled was restarted in a loop instead of coming up when the worker did.
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import * as grpc from '@grpc/grpc-js';
import { afterAll, describe, expect, it } from 'vitest';
import { healthDefinition } from '../shared/proto.js';
import { Proc, dist, waitFor } from './helpers/processes.js';
import { freePort } from './helpers/prometheus.js';

const dir = mkdtempSync(join(tmpdir(), 'kvstore-health-'));
const procs: Proc[] = [];
afterAll(async () => {
  for (const p of procs) await p.stop();
  rmSync(dir, { recursive: true, force: true });
});

type HealthClient = grpc.Client & { Check(r: object, o: grpc.CallOptions, cb: (e: grpc.ServiceError | null, r?: { status: string | number }) => void): void };

const STATUS = ['UNKNOWN', 'SERVING', 'NOT_SERVING', 'SERVICE_UNKNOWN'];

function check(client: HealthClient, service: string): Promise<string> {
  return new Promise((resolve, reject) =>
    client.Check({ service }, { deadline: Date.now() + 3000 }, (err, res) => (err ? reject(err) : resolve(STATUS[Number(res!.status)] ?? String(res!.status)))),
  );
}

describe('gateway health', () => {
  it('is alive while it waits for its workers, and ready once it knows the membership', async () => {
    const [gatewayPort, workerPort] = [await freePort(), await freePort()];
    const gateway = new Proc(dist('gateway/main.js'), ['--host', '127.0.0.1', '--port', String(gatewayPort), '--metrics-port', '0', '--members', `worker-0=127.0.0.1:${workerPort}`, '--data-dir', dir]);
    procs.push(gateway);
    // Not awaited: it reports "listening" to a supervisor only once it serves, which needs the worker.
    const serving = gateway.start(60_000);
    serving.catch(() => undefined); // awaited below; a failure before that is reported there
    const Health = grpc.loadPackageDefinition(healthDefinition()) as unknown as { grpc: { health: { v1: { Health: new (a: string, c: grpc.ChannelCredentials) => HealthClient } } } };
    const client = new Health.grpc.health.v1.Health(`127.0.0.1:${gatewayPort}`, grpc.credentials.createInsecure());
    try {
      await waitFor('the gateway to answer health checks', () => check(client, '').then((s) => s === 'SERVING', () => false), 20_000, 100);
      expect(await check(client, 'kvstore.KeyValueStore')).toBe('NOT_SERVING');

      const worker = new Proc(dist('worker/main.js'), ['--name', 'worker-0', '--host', '127.0.0.1', '--port', String(workerPort), '--metrics-port', '0', '--data-dir', dir]);
      procs.push(worker);
      await worker.start();
      await serving;
      expect(await check(client, 'kvstore.KeyValueStore')).toBe('SERVING');
      expect(await check(client, '')).toBe('SERVING');
    } finally {
      client.close();
    }
  });
});
