// The worker's one port carries both gRPC and the gateway's framed exchange (worker/listener.ts).
// Against a real worker process: both protocols are served side by side, also when their first bytes
// arrive a few at a time; a peer that sends a malformed frame or speaks neither protocol is
// disconnected while everyone else is served; and a peer that sends batches but never reads the
// answers cannot make the worker buffer them: it stops reading, so its memory stays flat while the
// sender's own write buffer grows instead. A worker stopped with SIGTERM while such a peer is not
// reading still delivers the answer to every batch it applied, once the peer reads within the
// shutdown grace: what it stored and what it answered are the same.
import { readFileSync, mkdtempSync, rmSync } from 'node:fs';
import { connect, createServer, type AddressInfo, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import Database from 'better-sqlite3';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { WorkerLink } from '../gateway/worker-link.js';
import { FrameKind, FrameReader, MAGIC, decodeResults, encodeOps } from '../shared/exchange-codec.js';
import { OpType } from '../shared/proto.js';
import { grpc } from './helpers/client.js';
import { Proc, dist, waitFor } from './helpers/processes.js';
import { scanWorkerKeys } from './helpers/worker-client.js';

const dir = mkdtempSync(join(tmpdir(), 'kvstore-exchange-'));
let worker: Proc;
let link: WorkerLink;
let port: number;

beforeAll(async () => {
  worker = new Proc(dist('worker/main.js'), ['--name', 'worker-0', '--host', '127.0.0.1', '--port', '0', '--metrics-port', '0', '--data-dir', dir]);
  port = (await worker.start()).port;
  link = new WorkerLink('worker-0', `127.0.0.1:${port}`, { timeoutMs: 10_000, maxInflight: 50_000 });
});

afterAll(async () => {
  await link?.close();
  await worker?.stop();
  rmSync(dir, { recursive: true, force: true });
});

const rssMiB = (pid: number): number => Number(/VmRSS:\s+(\d+)/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))![1]) / 1024;

interface Peer {
  s: Socket;
  closed: Promise<void>;
}

/** A raw connection to the worker port; its close is watched from the start (the worker can be quick). */
function open(): Promise<Peer> {
  return new Promise((resolve, reject) => {
    const s = connect(port, '127.0.0.1', () => resolve({ s, closed }));
    const closed = new Promise<void>((r) => s.once('close', () => r()));
    s.once('error', reject);
    s.on('error', () => {});
  });
}

/** 'closed' if the worker closes the connection within `ms`, else 'open'. */
function closedWithin(peer: Peer, ms: number): Promise<'closed' | 'open'> {
  peer.s.resume();
  return Promise.race([peer.closed.then(() => 'closed' as const), new Promise<'open'>((r) => setTimeout(() => r('open'), ms).unref())]);
}

describe('worker port: gRPC and the exchange side by side', () => {
  it('serves a key written over the exchange to a gRPC scan on the same port', async () => {
    expect((await link.call(OpType.PUT, 'both/1', 'v')).code).toBe(grpc.status.OK);
    expect(await scanWorkerKeys(port)).toContain('both/1');
  });

  it('hands gRPC to grpc-js even when the HTTP/2 preface arrives a few bytes at a time', async () => {
    // A proxy that forwards the first 40 bytes from the client 3 bytes at a time, 10 ms apart.
    const proxy = createServer((client) => {
      const up = connect(port, '127.0.0.1');
      let dribbled = 0;
      let queue = Promise.resolve();
      client.on('data', (chunk: Buffer) => {
        queue = queue.then(async () => {
          let rest = chunk;
          while (dribbled < 40 && rest.length > 0) {
            const n = Math.min(3, 40 - dribbled, rest.length);
            up.write(rest.subarray(0, n));
            rest = rest.subarray(n);
            dribbled += n;
            await new Promise((r) => setTimeout(r, 10));
          }
          if (rest.length > 0) up.write(rest);
        });
      });
      up.pipe(client);
      for (const [a, b] of [[client, up], [up, client]] as const) {
        a.on('error', () => {});
        a.on('close', () => b.destroy());
      }
    });
    const proxyPort = await new Promise<number>((r) => proxy.listen(0, '127.0.0.1', () => r((proxy.address() as AddressInfo).port)));
    try {
      expect(await scanWorkerKeys(proxyPort)).toContain('both/1');
    } finally {
      proxy.close();
    }
  });

  it('recognises the exchange when its first bytes arrive in pieces', async () => {
    const { s } = await open();
    const answers: number[] = [];
    const reader = new FrameReader((kind, buf, start, end) => {
      if (kind === FrameKind.RESULTS) answers.push(...decodeResults(buf, start, end).results.map((r) => r.code));
    });
    s.on('data', (c: Buffer) => reader.push(c));
    const frame = encodeOps(0, [{ id: 1, type: OpType.GET, key: 'both/1', value: '' }]);
    s.write(MAGIC.subarray(0, 2));
    await new Promise((r) => setTimeout(r, 50));
    s.write(Buffer.concat([MAGIC.subarray(2), frame.subarray(0, 3)]));
    await new Promise((r) => setTimeout(r, 50));
    s.write(frame.subarray(3));
    await waitFor('the answer', async () => answers.length === 1, 5000);
    expect(answers).toEqual([grpc.status.OK]);
    s.destroy();
  });

  it('disconnects a malformed frame, a zero-length frame and a stranger, and keeps serving', async () => {
    const badLength = await open();
    const header = Buffer.alloc(4);
    header.writeUInt32LE(0, 0);
    badLength.s.write(Buffer.concat([MAGIC, header]));
    const badBody = await open();
    const frame = encodeOps(0, [{ id: 1, type: OpType.GET, key: 'k', value: '' }]);
    frame.writeUInt32LE(1000, 13); // claims more ops than it holds
    badBody.s.write(Buffer.concat([MAGIC, frame]));
    const stranger = await open();
    stranger.s.write('GET / HTTP/1.1\r\nHost: x\r\n\r\n');
    expect(await Promise.all([closedWithin(badLength, 5000), closedWithin(badBody, 5000), closedWithin(stranger, 5000)])).toEqual(['closed', 'closed', 'closed']);
    await waitFor('the malformed frames logged', async () => worker.output.join('').includes('malformed frame'), 5000);
    expect((await link.call(OpType.GET, 'both/1', '')).value).toBe('v');
  });

  it('stops reading from a peer that never reads its answers, instead of buffering them', async () => {
    await link.call(OpType.PUT, 'big', 'x'.repeat(2048));
    const before = rssMiB(worker.pid);
    const { s } = await open();
    s.pause(); // never reads: every answer (1,000 x 2 KiB a batch) stays unread
    s.write(MAGIC);
    const batch = (id: number): Buffer => encodeOps(0, Array.from({ length: 1000 }, (_, i) => ({ id: id * 1000 + i, type: OpType.GET, key: 'big', value: '' })));
    // Unbounded buffering would hold ~2 MiB of answers per batch sent: 500 batches = ~1 GiB.
    const until = Date.now() + 10_000;
    let sent = 0;
    while (sent < 500 && Date.now() < until) {
      s.write(batch(sent++));
      if (s.writableLength > 4 * 1024 * 1024) await new Promise((r) => setTimeout(r, 20));
    }
    await new Promise((r) => setTimeout(r, 1500));
    const grown = rssMiB(worker.pid) - before;
    console.log(`FIGURES exchange-backpressure ${JSON.stringify({ batchesSent: sent, senderBufferedMiB: +(s.writableLength / 2 ** 20).toFixed(1), workerRssGrowthMiB: +grown.toFixed(1) })}`);
    expect(s.writableLength, 'the sender is held back by TCP').toBeGreaterThan(1024 * 1024);
    expect(grown, `worker RSS grew ${grown.toFixed(0)} MiB`).toBeLessThan(100);
    // Everyone else is still served meanwhile.
    expect((await link.call(OpType.GET, 'both/1', '')).value).toBe('v');
    s.destroy();
  });
});

describe('worker SIGTERM with answers the gateway has not read yet', () => {
  it('delivers the answer to every batch it applied before exiting, and applies none it does not answer', async () => {
    const own = mkdtempSync(join(tmpdir(), 'kvstore-drain-flush-'));
    const w = new Proc(dist('worker/main.js'), ['--name', 'worker-0', '--host', '127.0.0.1', '--port', '0', '--metrics-port', '0', '--data-dir', own, '--shutdown-grace-ms', '10000']);
    try {
      const { port: p } = await w.start();
      const s = connect(p, '127.0.0.1');
      s.on('error', () => {});
      await new Promise((r) => s.once('connect', r));
      const closed = new Promise<void>((r) => s.once('close', () => r()));
      const answered = new Map<number, number>();
      const reader = new FrameReader((kind, buf, start, end) => {
        if (kind === FrameKind.RESULTS) for (const r of decodeResults(buf, start, end).results) answered.set(r.id, r.code);
      });
      s.on('data', (c: Buffer) => reader.push(c));
      const N = 3000;
      const value = 'v'.repeat(2048);
      s.write(MAGIC);
      s.write(encodeOps(0, Array.from({ length: N }, (_, i) => ({ id: i + 1, type: OpType.PUT, key: `fill/${i}`, value }))));
      await waitFor('the fill answered', async () => answered.size === N, 10_000);
      answered.clear();
      // The gateway stops reading for a moment: ~6 MiB of answers to the reads fill the socket, the
      // worker stops reading, and the puts behind them may or may not be applied before the signal.
      s.pause();
      const GETS = 10_000;
      const BATCHES = 20;
      const PER_BATCH = 50;
      const putId = (b: number, i: number): number => 100_000 + b * PER_BATCH + i;
      s.write(
        Buffer.concat([
          encodeOps(0, Array.from({ length: N }, (_, i) => ({ id: GETS + i, type: OpType.GET, key: `fill/${i}`, value: '' }))),
          ...Array.from({ length: BATCHES }, (_, b) =>
            encodeOps(0, Array.from({ length: PER_BATCH }, (_, i) => ({ id: putId(b, i), type: OpType.PUT, key: `late/${b}/${i}`, value: `stored ${b}/${i}` }))),
          ),
        ]),
      );
      await new Promise((r) => setTimeout(r, 500));
      const exit = w.exited();
      w.kill('SIGTERM');
      // The peer reads again well within the shutdown grace.
      await new Promise((r) => setTimeout(r, 500));
      s.resume();
      const outcome = await Promise.race([exit, new Promise<string>((r) => setTimeout(() => r('still running after 15 s'), 15_000).unref())]);
      await Promise.race([closed, new Promise((r) => setTimeout(r, 2000).unref())]);
      s.destroy();
      expect(outcome).toBe(0);

      const db = new Database(join(own, 'worker-0.sqlite'), { readonly: true });
      const stored = new Map(db.prepare<[], { key: string; value: string }>("SELECT key, value FROM kv WHERE key >= 'late/' AND key < 'late0'").all().map((r) => [r.key, r.value]));
      db.close();
      const gets = Array.from({ length: N }, (_, i) => answered.get(GETS + i));
      let batchesAnswered = 0;
      for (let b = 0; b < BATCHES; b++) {
        const codes = Array.from({ length: PER_BATCH }, (_, i) => answered.get(putId(b, i)));
        const inDb = Array.from({ length: PER_BATCH }, (_, i) => stored.get(`late/${b}/${i}`));
        // Applied and answered, or neither: an unanswered put the gateway reports UNAVAILABLE must
        // not be stored, and a stored one must have been answered.
        if (codes[0] === undefined) expect({ batch: b, codes, inDb }).toEqual({ batch: b, codes: codes.map(() => undefined), inDb: inDb.map(() => undefined) });
        else {
          batchesAnswered++;
          expect({ batch: b, codes, inDb }).toEqual({ batch: b, codes: codes.map(() => grpc.status.OK), inDb: inDb.map((_, i) => `stored ${b}/${i}`) });
        }
      }
      console.log(`FIGURES worker-sigterm-unread-answers ${JSON.stringify({ readsAnswered: gets.filter((c) => c !== undefined).length, reads: N, putBatchesAnswered: batchesAnswered, putBatchesStored: new Set([...stored.keys()].map((k) => k.split('/')[1])).size, putBatches: BATCHES })}`);
      // The reads were applied before the signal (their answers are what filled the socket).
      expect(gets.filter((c) => c !== grpc.status.OK).length, 'reads applied but not answered').toBe(0);
    } finally {
      await w.stop('SIGKILL');
      rmSync(own, { recursive: true, force: true });
    }
  }, 40_000);
});
