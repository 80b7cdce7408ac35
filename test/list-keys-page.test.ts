// ListKeysPage (a wire-compatible addition to the public API): paging through the gateway and through
// a worker's --direct-api returns every key exactly once, in byte order, the same as ListKeys.
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import * as grpc from '@grpc/grpc-js';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startDirectWorker, startGatewayCluster, type ServerSet } from '../bench/servers.js';
import { publicClientOptions } from '../shared/grpc-options.js';
import { publicApi } from '../shared/proto.js';

type Cb<T> = (err: grpc.ServiceError | null, res?: T) => void;
interface Client extends grpc.Client {
  Put(req: { key: string; value: string }, cb: Cb<object>): void;
  Delete(req: { key: string }, cb: Cb<object>): void;
  ListKeys(req: object, cb: Cb<{ keys: string[] }>): void;
  ListKeysPage(req: { after: string; limit: number }, cb: Cb<{ keys: string[]; next_after: string; done: boolean }>): void;
}
const call = <T>(fn: (cb: Cb<T>) => void): Promise<T> => new Promise((res, rej) => fn((e, r) => (e ? rej(e) : res(r!))));

const PRELOADED = 2500;
// Bytes that trip naive implementations: NUL, spaces, SQL and LIKE metacharacters, the highest ASCII.
const ODD = ['\u0000', 'a\u0000b', ' space', "it's", '100%', 'under_score', 'x/y', "'; DROP TABLE kv; --", '\u007f'];

const dir = mkdtempSync(join(tmpdir(), 'kv-page-'));
const sets: ServerSet[] = [];
afterAll(async () => {
  await Promise.all(sets.map((s) => s.stop()));
  rmSync(dir, { recursive: true, force: true });
});

async function pageAll(c: Client, limit: number): Promise<{ keys: string[]; pages: number }> {
  const keys: string[] = [];
  let after = '';
  for (let pages = 1; pages < 10_000; pages++) {
    const page = await call<{ keys: string[]; next_after: string; done: boolean }>((cb) => c.ListKeysPage({ after, limit }, cb));
    keys.push(...page.keys);
    if (page.done) return { keys, pages };
    expect(page.keys.length).toBeGreaterThan(0);
    after = page.next_after;
  }
  throw new Error('paging did not end');
}

describe.each(['gateway', 'direct'] as const)('ListKeysPage via %s', (kind) => {
  let client: Client;
  beforeAll(async () => {
    const opts = { dataDir: join(dir, kind), workers: 3, keys: PRELOADED, valueSize: 10, sync: 'normal' as const, metrics: 'on' as const };
    const set = kind === 'gateway' ? await startGatewayCluster(opts) : await startDirectWorker(opts);
    sets.push(set);
    const Ctor = publicApi().KeyValueStore;
    client = new Ctor(set.address, grpc.credentials.createInsecure(), publicClientOptions) as unknown as Client;
    for (const k of ODD) await call((cb) => client.Put({ key: k, value: 'v' }, cb));
  });

  it('returns every key once, in byte order, the same as ListKeys', async () => {
    const all = (await call<{ keys: string[] }>((cb) => client.ListKeys({}, cb))).keys;
    expect(all.length).toBe(PRELOADED + ODD.length);
    const { keys, pages } = await pageAll(client, 1000);
    expect(pages).toBe(Math.ceil(all.length / 1000));
    expect(keys).toEqual(all);
    const sorted = [...keys].sort((a, b) => Buffer.compare(Buffer.from(a), Buffer.from(b)));
    expect(keys).toEqual(sorted);
    for (const k of ODD) expect(keys).toContain(k);
  });

  it('uses the default page size for 0 and clamps a huge limit', async () => {
    const first = await call<{ keys: string[]; done: boolean }>((cb) => client.ListKeysPage({ after: '', limit: 0 }, cb));
    expect(first.keys.length).toBe(1000);
    expect(first.done).toBe(false);
    const big = await call<{ keys: string[]; done: boolean }>((cb) => client.ListKeysPage({ after: '', limit: 4_000_000_000 }, cb));
    expect(big.keys.length).toBe(PRELOADED + ODD.length);
    expect(big.done).toBe(true);
  });

  it('resumes strictly after `after`, even after that key was deleted', async () => {
    const first = await call<{ keys: string[]; next_after: string }>((cb) => client.ListKeysPage({ after: '', limit: 5 }, cb));
    await call((cb) => client.Delete({ key: first.next_after }, cb));
    const second = await call<{ keys: string[] }>((cb) => client.ListKeysPage({ after: first.next_after, limit: 5 }, cb));
    expect(second.keys.length).toBe(5);
    expect(second.keys[0] > first.next_after).toBe(true);
    expect(second.keys).not.toContain(first.next_after);
  });
});
