// Direct calls to a worker's internal service, for tests that inspect where keys live.
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import * as grpc from '@grpc/grpc-js';
import { workerApi, type KeyChunk, type Op, type OpBatch, type OpResult, type ResultBatch } from '../../shared/proto.js';
import { Proc, dist } from './processes.js';

export function scanWorkerKeys(port: number): Promise<string[]> {
  const client = new (workerApi().Worker)(`127.0.0.1:${port}`, grpc.credentials.createInsecure());
  return new Promise((resolve, reject) => {
    const keys: string[] = [];
    const call = (client as unknown as { ScanKeys(r: object, o: object): grpc.ClientReadableStream<KeyChunk> }).ScanKeys(
      { after: '', limit: 0 },
      { deadline: Date.now() + 30_000 },
    );
    call.on('data', (c: KeyChunk) => keys.push(...c.keys));
    call.on('error', (e) => {
      client.close();
      reject(e);
    });
    call.on('end', () => {
      client.close();
      resolve(keys);
    });
  });
}

/** One batch through the gRPC form of a worker's exchange, at `epoch`: its results, in order. */
export function exchange(client: grpc.Client, epoch: number, ops: Op[]): Promise<OpResult[]> {
  return new Promise((resolve, reject) => {
    const call = (client as unknown as { Exchange(o: grpc.CallOptions): grpc.ClientDuplexStream<OpBatch, ResultBatch> }).Exchange({ deadline: Date.now() + 30_000 });
    call.on('data', (b: ResultBatch) => {
      resolve(b.results);
      call.end();
    });
    call.on('error', reject);
    call.write({ epoch, ops });
  });
}

export interface LoneWorker {
  proc: Proc;
  client: grpc.Client;
  /** Its data folder (removed by stop). */
  dir: string;
  stop(): Promise<void>;
}

/** One real worker process named worker-0 in a temp folder, with a client of its internal API. */
export async function startLoneWorker(prefix: string): Promise<LoneWorker> {
  const dir = mkdtempSync(join(tmpdir(), prefix));
  const proc = new Proc(dist('worker/main.js'), ['--name', 'worker-0', '--host', '127.0.0.1', '--port', '0', '--metrics-port', '0', '--data-dir', dir]);
  const l = await proc.start();
  const client = new (workerApi().Worker)(`127.0.0.1:${l.port}`, grpc.credentials.createInsecure());
  return {
    proc,
    client,
    dir,
    async stop() {
      client.close();
      await proc.stop();
      rmSync(dir, { recursive: true, force: true });
    },
  };
}
