// Direct calls to a worker's internal service, for tests that inspect where keys live.
import { mkdtempSync, rmSync } from 'node:fs';
import { connect } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import * as grpc from '@grpc/grpc-js';
import { FrameKind, FrameReader, MAGIC, decodeResults, encodeOps } from '../../shared/exchange-codec.js';
import { getMembership, setMembership } from '../../gateway/worker-rpc.js';
import { decodeState, encodeState, type MembershipState } from '../../shared/membership.js';
import { workerApi, type KeyChunk, type MembershipReply, type Op, type OpResult } from '../../shared/proto.js';
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

/** One batch on its own connection to a worker's exchange, at `epoch`: its results, in order. */
export function exchange(port: number, epoch: number, ops: Op[]): Promise<OpResult[]> {
  return new Promise((resolve, reject) => {
    const s = connect(port, '127.0.0.1');
    const timer = setTimeout(() => s.destroy(new Error(`no answer from the worker on port ${port} within 30 s`)), 30_000);
    const reader = new FrameReader((kind, buf, start, end) => {
      if (kind !== FrameKind.RESULTS) return;
      clearTimeout(timer);
      resolve(decodeResults(buf, start, end).results);
      s.end();
    });
    s.on('data', (chunk: Buffer) => reader.push(chunk));
    s.on('error', (err) => {
      clearTimeout(timer);
      reject(err);
    });
    s.write(Buffer.concat([MAGIC, encodeOps(epoch, ops)]));
  });
}

export interface LoneWorker {
  proc: Proc;
  /** Its one port: gRPC and the exchange. */
  port: number;
  client: grpc.Client;
  /** Its data folder (removed by stop). */
  dir: string;
  /** Stores `state` as its membership (over none), passed on to the members it names. */
  install(state: MembershipState): Promise<MembershipReply>;
  /** Moves its stored membership one epoch ahead, behind any gateway's back. */
  advanceEpoch(): Promise<MembershipReply>;
  stop(): Promise<void>;
}

/** One real worker process named worker-0 in a temp folder, with a client of its internal API. */
export async function startLoneWorker(prefix: string): Promise<LoneWorker> {
  const dir = mkdtempSync(join(tmpdir(), prefix));
  const proc = new Proc(dist('worker/main.js'), ['--name', 'worker-0', '--host', '127.0.0.1', '--port', '0', '--metrics-port', '0', '--data-dir', dir]);
  const l = await proc.start();
  const client = new (workerApi().Worker)(`127.0.0.1:${l.port}`, grpc.credentials.createInsecure());
  const install = (state: MembershipState): Promise<MembershipReply> =>
    setMembership(client, 'worker-0', { expected_epoch: 0, state_json: encodeState(state), propagate: true }, 10_000);
  return {
    proc,
    port: l.port,
    client,
    dir,
    install,
    async advanceEpoch() {
      const stored = decodeState((await getMembership(client, 'worker-0', 5000)).state_json);
      return install({ ...stored, epoch: stored.epoch + 1 });
    },
    async stop() {
      client.close();
      await proc.stop();
      rmSync(dir, { recursive: true, force: true });
    },
  };
}
