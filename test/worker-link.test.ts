// The gateway's link to one worker, against a real worker process: more requests in one event-loop turn
// than one batch holds are all answered; while the worker is hung (SIGSTOP) requests expire with
// DEADLINE_EXCEEDED (also when they come after an idle spell, when the link's deadline sweep had
// stopped), nothing stays queued, and after SIGCONT the same link serves again; while a worker
// is unreachable requests fail at once with UNAVAILABLE, and the link connects when it appears.
import { mkdtempSync, rmSync } from 'node:fs';
import { createServer, type AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { WorkerLink } from '../gateway/worker-link.js';
import { OpType } from '../shared/proto.js';
import { grpc } from './helpers/client.js';
import { Proc, dist, waitFor } from './helpers/processes.js';

const dir = mkdtempSync(join(tmpdir(), 'kvstore-link-'));
let worker: Proc;
let link: WorkerLink;

beforeAll(async () => {
  worker = new Proc(dist('worker/main.js'), ['--name', 'worker-0', '--host', '127.0.0.1', '--port', '0', '--metrics-port', '0', '--data-dir', dir]);
  const l = await worker.start();
  link = new WorkerLink('worker-0', `127.0.0.1:${l.port}`, { timeoutMs: 10_000, maxInflight: 50_000 });
});

afterAll(async () => {
  worker?.kill('SIGCONT');
  await link?.close();
  await worker?.stop();
  rmSync(dir, { recursive: true, force: true });
});

const queued = (l: WorkerLink): number => (l as unknown as { queue: unknown[] }).queue.length;
const sweeping = (l: WorkerLink): boolean => (l as unknown as { sweeper: unknown }).sweeper !== undefined;

describe('worker link', () => {
  it('answers every request of a turn larger than one batch', async () => {
    const results = await Promise.all(Array.from({ length: 10_000 }, (_, i) => link.call(OpType.GET, `link/${i}`, '')));
    expect(results.every((r) => r.code === grpc.status.NOT_FOUND)).toBe(true);
    expect(link.inflight).toBe(0);
  });

  it('expires requests to a hung worker without keeping them queued, and serves again after SIGCONT', async () => {
    const hungLink = new WorkerLink('worker-0', link.address, { timeoutMs: 1000, maxInflight: 50_000 });
    await hungLink.call(OpType.GET, 'link/before', '');
    // Idle, the deadline sweep (every 100 ms here) stops; the requests below must start it again.
    await waitFor('the idle link to stop sweeping', async () => !sweeping(hungLink), 2000);
    worker.kill('SIGSTOP');
    try {
      const value = 'x'.repeat(2048);
      const calls: Promise<unknown>[] = [];
      // Two waves a deadline apart: the second is written while the first still fills the stream.
      for (let wave = 0; wave < 2; wave++) {
        for (let i = 0; i < 3000; i++) calls.push(hungLink.call(OpType.PUT, `hung/${wave}/${i}`, value).then(() => 'ok', (e: { code: number }) => e.code));
        await new Promise((r) => setTimeout(r, 600));
      }
      const codes = await Promise.all(calls);
      expect(codes.every((c) => c === grpc.status.DEADLINE_EXCEEDED || c === grpc.status.UNAVAILABLE)).toBe(true);
      // The first wave expires by its own deadline, long before keepalive (10 s + 5 s) would cut the
      // connection and fail it as UNAVAILABLE.
      expect(codes.slice(0, 3000).every((c) => c === grpc.status.DEADLINE_EXCEEDED)).toBe(true);
      expect(hungLink.inflight).toBe(0);
      expect(queued(hungLink)).toBe(0);
    } finally {
      worker.kill('SIGCONT');
    }
    await waitFor('the link to serve again', async () => (await hungLink.call(OpType.GET, 'link/after', '')).code === grpc.status.NOT_FOUND, 20_000);
    await hungLink.close();
  });

  it('fails requests at once with UNAVAILABLE while its worker is unreachable, and connects when it appears', async () => {
    const port = await new Promise<number>((resolve) => {
      const srv = createServer().listen(0, '127.0.0.1', () => {
        const p = (srv.address() as AddressInfo).port;
        srv.close(() => resolve(p));
      });
    });
    const downLink = new WorkerLink('worker-9', `127.0.0.1:${port}`, { timeoutMs: 10_000, maxInflight: 1000 });
    const late = new Proc(dist('worker/main.js'), ['--name', 'worker-9', '--host', '127.0.0.1', '--port', String(port), '--metrics-port', '0', '--data-dir', join(dir, 'late')]);
    try {
      await new Promise((r) => setTimeout(r, 300)); // the first dial has failed
      const t0 = Date.now();
      const errors = await Promise.all(Array.from({ length: 50 }, () => downLink.call(OpType.GET, 'k', '').then(() => undefined, (e: { code: number; message: string }) => e)));
      // Well under the 10 s deadline: nothing waits for a worker that is not there.
      expect(Date.now() - t0).toBeLessThan(2000);
      expect(errors.every((e) => e?.code === grpc.status.UNAVAILABLE && /worker-9/.test(e.message) && /ECONNREFUSED/.test(e.message))).toBe(true);
      await late.start();
      await waitFor('the link to connect', async () => (await downLink.call(OpType.GET, 'k', '').catch(() => undefined))?.code === grpc.status.NOT_FOUND, 10_000);
      expect(downLink.isUp).toBe(true);
    } finally {
      await downLink.close();
      await late.stop();
    }
  });

  it('keeps a request callback that throws from failing its batch neighbours or escaping into a timer', async () => {
    const thrown: unknown[] = [];
    const l = new WorkerLink('worker-0', link.address, { timeoutMs: 10_000, maxInflight: 100 }, { onCallbackError: (e) => thrown.push(e) });
    const outcomes = await new Promise<(number | string)[]>((resolve) => {
      const got: (number | string)[] = [];
      for (let i = 0; i < 8; i++) {
        l.send(OpType.PUT, `throwing/${i}`, 'v', (err, r) => {
          got[i] = err ? err.message : r!.code;
          if (got.filter((x) => x !== undefined).length === 8) resolve(got);
          if (i === 2) throw new Error('caller bug');
        });
      }
    });
    expect(outcomes).toEqual(Array(8).fill(grpc.status.OK));
    expect(thrown).toHaveLength(1);
    // The failure paths settle through the same guard: a throwing callback of a request that fails
    // when the link closes is reported too, and the test process is still here to check it.
    const closing = new Promise<void>((resolve) =>
      l.send(OpType.GET, 'throwing/0', '', () => {
        resolve();
        throw new Error('caller bug on failure');
      }),
    );
    await l.close();
    await closing;
    expect(thrown.length).toBeGreaterThanOrEqual(1);
  });

  it('does not fail requests when an established connection drops: it dials again at once', async () => {
    const l = new WorkerLink('worker-0', link.address, { timeoutMs: 10_000, maxInflight: 100 });
    await l.call(OpType.PUT, 'drop/1', 'v');
    (l as unknown as { socket: { destroy(): void } }).socket.destroy();
    const results: (number | string)[] = [];
    for (let i = 0; i < 20; i++) {
      results.push(await l.call(OpType.GET, 'drop/1', '').then((r) => r.code, (e: Error) => e.message));
      await new Promise((r) => setTimeout(r, 10));
    }
    expect(results).toEqual(Array(20).fill(grpc.status.OK));
    await l.close();
  });
});
