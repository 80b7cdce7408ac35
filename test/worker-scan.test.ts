// A worker's moving-key scan (what the migration mover reads): `limit` counts leaving keys returned,
// so a window of rows without one never ends the scan early. It once did, and a mover that restarted
// its pass after a fault saw "nothing left" while keys still had to move (the migration never ended).
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import * as grpc from '@grpc/grpc-js';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { encodeState } from '../shared/membership.js';
import { OpType, workerApi, type KeyChunk, type MembershipReply } from '../shared/proto.js';
import { Ring } from '../shared/ring.js';
import { Proc, dist } from './helpers/processes.js';
import { exchange } from './helpers/worker-client.js';

const dir = mkdtempSync(join(tmpdir(), 'kvstore-scan-'));
let worker: Proc;
let client: grpc.Client;
const keys = Array.from({ length: 3000 }, (_, i) => `k${String(i).padStart(5, '0')}`);

function unary<T>(method: string, req: object): Promise<T> {
  return new Promise((resolve, reject) =>
    (client as unknown as Record<string, (r: object, o: object, cb: (e: Error | null, r: T) => void) => void>)[method](req, { deadline: Date.now() + 10_000 }, (e, r) =>
      e ? reject(e) : resolve(r),
    ),
  );
}

function scan(req: object): Promise<{ keys: string[]; values: string[] }> {
  return new Promise((resolve, reject) => {
    const out = { keys: [] as string[], values: [] as string[] };
    const call = (client as unknown as { ScanKeys(r: object, o: object): grpc.ClientReadableStream<KeyChunk> }).ScanKeys(req, { deadline: Date.now() + 10_000 });
    call.on('data', (c: KeyChunk) => {
      out.keys.push(...c.keys);
      out.values.push(...c.values);
    });
    call.on('error', reject);
    call.on('end', () => resolve(out));
  });
}

beforeAll(async () => {
  worker = new Proc(dist('worker/main.js'), ['--name', 'worker-0', '--host', '127.0.0.1', '--port', '0', '--metrics-port', '0', '--data-dir', dir]);
  const l = await worker.start();
  client = new (workerApi().Worker)(`127.0.0.1:${l.port}`, grpc.credentials.createInsecure());
  await exchange(l.port, 0, keys.map((key, i) => ({ id: i + 1, type: OpType.PUT, key, value: `v:${key}` })));
  const m = (name: string) => ({ name, address: '127.0.0.1:1' });
  const set = (expected: number, state: object) => unary<MembershipReply>('SetMembership', { expected_epoch: expected, state_json: encodeState(state as never), propagate: false });
  expect((await set(0, { epoch: 1, members: [m('worker-0')], previous: null })).applied).toBe(true);
  expect((await set(1, { epoch: 2, members: [m('worker-0'), m('worker-1'), m('worker-2')], previous: [m('worker-0')] })).applied).toBe(true);
});

afterAll(async () => {
  client?.close();
  await worker?.stop();
  rmSync(dir, { recursive: true, force: true });
});

describe('moving-key scan', () => {
  it('returns exactly the first `limit` leaving keys after the cursor, with their values', async () => {
    const ring = new Ring(['worker-0', 'worker-1', 'worker-2']);
    const leaving = keys.filter((k) => ring.owner(k) !== 'worker-0');
    for (const [after, limit] of [['', 10], ['', 500], [leaving[700], 37], [leaving[leaving.length - 3], 10]] as const) {
      const from = leaving.findIndex((k) => k > after);
      const r = await scan({ epoch: 2, moving_only: true, with_values: true, after, limit });
      expect(r.keys).toEqual(leaving.slice(from, from + limit));
      expect(r.values).toEqual(r.keys.map((k) => `v:${k}`));
    }
    // Without a limit: every leaving key, each once.
    expect((await scan({ epoch: 2, moving_only: true })).keys).toEqual(leaving);
  });

  it('a limit on a plain scan counts keys too', async () => {
    expect((await scan({ after: keys[10], limit: 25 })).keys).toEqual(keys.slice(11, 36));
    expect((await scan({})).keys).toEqual(keys);
  });
});
