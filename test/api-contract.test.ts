// Every rule of the public contract, through a real gateway and three real workers.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Ring } from '../shared/ring.js';
import { codeOf, errorOf, grpc, kvClient, type KvClient } from './helpers/client.js';
import { TestCluster } from './helpers/processes.js';

let cluster: TestCluster;
let kv: KvClient;

beforeAll(async () => {
  cluster = await TestCluster.start({ workers: 3 });
  kv = kvClient(cluster.address);
});

afterAll(async () => {
  kv?.close();
  await cluster?.stop();
});

describe('Put, Get, Delete', () => {
  it('Put returns the previous value, or empty when there was none', async () => {
    expect(await kv.put('alpha', 'one')).toBe('');
    expect(await kv.put('alpha', 'two')).toBe('one');
    expect(await kv.get('alpha')).toBe('two');
  });

  it('Get of a missing key is NOT_FOUND naming the key', async () => {
    const err = await errorOf(kv.get('no such key'));
    expect(err.code).toBe(grpc.status.NOT_FOUND);
    expect(err.details).toContain('no such key');
  });

  it('Delete removes, and deleting again succeeds (idempotent)', async () => {
    await kv.put('gone', 'x');
    await kv.del('gone');
    expect(await codeOf(kv.get('gone'))).toBe(grpc.status.NOT_FOUND);
    await kv.del('gone');
    await kv.del('never-existed');
    expect(await kv.put('gone', 'back')).toBe('');
  });

  it('an empty value is a value, not a missing key', async () => {
    expect(await kv.put('empty', '')).toBe('');
    expect(await kv.get('empty')).toBe('');
    expect(await kv.put('empty', 'now')).toBe('');
  });
});

describe('limits', () => {
  it('accepts keys of 1 and 128 bytes and values of 0 and 2048 bytes', async () => {
    const k128 = 'k'.repeat(128);
    await kv.put('a', '');
    await kv.put(k128, 'v'.repeat(2048));
    expect(await kv.get(k128)).toBe('v'.repeat(2048));
  });

  it('rejects one past each limit with INVALID_ARGUMENT naming field, rule and length, and stores nothing', async () => {
    const longKey = 'q'.repeat(129);
    let err = await errorOf(kv.put(longKey, 'v'));
    expect(err.code).toBe(grpc.status.INVALID_ARGUMENT);
    expect(err.details).toMatch(/key: .*128 bytes, got 129/);
    expect(await codeOf(kv.get(longKey.slice(0, 128)))).toBe(grpc.status.NOT_FOUND);

    err = await errorOf(kv.put('big-value', 'v'.repeat(2049)));
    expect(err.code).toBe(grpc.status.INVALID_ARGUMENT);
    expect(err.details).toMatch(/value: .*2048 bytes, got 2049/);
    expect(await codeOf(kv.get('big-value'))).toBe(grpc.status.NOT_FOUND);

    err = await errorOf(kv.put('', 'v'));
    expect(err.details).toMatch(/key: .*got 0 bytes/);
    expect(await codeOf(kv.get(''))).toBe(grpc.status.INVALID_ARGUMENT);
    expect(await codeOf(kv.del(''))).toBe(grpc.status.INVALID_ARGUMENT);
  });

  it('rejects non-ASCII keys and values with the byte position, and stores nothing', async () => {
    let err = await errorOf(kv.put('caf\u00e9', 'v'));
    expect(err.code).toBe(grpc.status.INVALID_ARGUMENT);
    expect(err.details).toMatch(/key: must be ASCII.*byte position 3/);
    err = await errorOf(kv.put('cafe', '\u2603'));
    expect(err.details).toMatch(/value: must be ASCII.*byte position 0/);
    expect(await codeOf(kv.get('cafe'))).toBe(grpc.status.NOT_FOUND);
  });
});

describe('keys are stored byte for byte', () => {
  const odd = [
    "it's",
    'say "hi"',
    '100%',
    'a_b',
    '%_%',
    '/path/to/key',
    "'; DROP TABLE kv; --",
    'x OR 1=1',
    'tab\there',
    'new\nline',
    'cr\rlf',
    ' leading and trailing ',
    '\\backslash\\',
    '\x01\x02\x7f',
  ];

  it.each(odd)('round-trips %j', async (key) => {
    await kv.put(key, `value of ${key}`);
    expect(await kv.get(key)).toBe(`value of ${key}`);
  });

  it('a key with a NUL byte is stored faithfully and never confused with its prefix', async () => {
    await kv.put('nul', 'prefix');
    await kv.put('nul\0', 'with trailing nul');
    await kv.put('nul\0suffix', 'with nul inside');
    expect(await kv.get('nul')).toBe('prefix');
    expect(await kv.get('nul\0')).toBe('with trailing nul');
    expect(await kv.get('nul\0suffix')).toBe('with nul inside');
    const keys = await kv.list();
    expect(keys.filter((k) => k.startsWith('nul'))).toEqual(['nul', 'nul\0', 'nul\0suffix']);
    await kv.del('nul\0');
    expect(await kv.get('nul')).toBe('prefix');
    expect(await kv.get('nul\0suffix')).toBe('with nul inside');
  });

  it('a LIKE pattern key matches only itself', async () => {
    await kv.put('%', 'percent');
    await kv.put('_', 'underscore');
    expect(await kv.get('%')).toBe('percent');
    expect(await codeOf(kv.get('%%'))).toBe(grpc.status.NOT_FOUND);
  });
});

describe('ListKeys', () => {
  it('returns every key from every worker, sorted by byte order, each once', async () => {
    const mine = Array.from({ length: 3000 }, (_, i) => `list/${(i * 7919) % 3000}`);
    for (let i = 0; i < mine.length; i += 500) await Promise.all(mine.slice(i, i + 500).map((k) => kv.put(k, 'v')));
    // Overwrites must not duplicate.
    await Promise.all(mine.slice(0, 200).map((k) => kv.put(k, 'again')));
    const keys = await kv.list();
    const listed = keys.filter((k) => k.startsWith('list/'));
    expect(listed).toHaveLength(3000);
    expect(new Set(keys).size).toBe(keys.length);
    const sorted = [...keys].sort((a, b) => Buffer.compare(Buffer.from(a, 'latin1'), Buffer.from(b, 'latin1')));
    expect(keys).toEqual(sorted);
    // The keys really are spread over all three workers.
    const ring = new Ring(['worker-0', 'worker-1', 'worker-2']);
    expect(new Set(listed.map((k) => ring.owner(k))).size).toBe(3);
  });
});
