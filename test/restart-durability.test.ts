// Acknowledged writes survive a clean restart of everything, and kill -9 of every process.
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { kvClient } from './helpers/client.js';
import { TestCluster } from './helpers/processes.js';

const dataDir = mkdtempSync(join(tmpdir(), 'kvstore-durability-'));
afterAll(() => rmSync(dataDir, { recursive: true, force: true }));

async function fill(address: string, prefix: string, n: number): Promise<Map<string, string>> {
  const kv = kvClient(address);
  const acked = new Map<string, string>();
  for (let i = 0; i < n; i += 250) {
    await Promise.all(
      Array.from({ length: Math.min(250, n - i) }, async (_, j) => {
        const k = `${prefix}/${i + j}`;
        const v = `${prefix}-value-${i + j}-${'x'.repeat((i + j) % 100)}`;
        await kv.put(k, v);
        acked.set(k, v);
      }),
    );
  }
  kv.close();
  return acked;
}

async function readBack(address: string, expected: Map<string, string>): Promise<void> {
  const kv = kvClient(address);
  try {
    const entries = [...expected];
    for (let i = 0; i < entries.length; i += 250) {
      const chunk = entries.slice(i, i + 250);
      const got = await Promise.all(chunk.map(([k]) => kv.get(k)));
      expect(got).toEqual(chunk.map(([, v]) => v));
    }
  } finally {
    kv.close();
  }
}

describe('durability across restarts', () => {
  it('keeps every key through a clean stop (SIGTERM exits 0) and start', async () => {
    let cluster = await TestCluster.start({ workers: 3, dataDir });
    const acked = await fill(cluster.address, 'clean', 1500);
    expect(await cluster.gateway.stop('SIGTERM')).toBe(0);
    for (const w of cluster.workers.values()) expect(await w.stop('SIGTERM')).toBe(0);
    cluster = await TestCluster.start({ workers: 3, dataDir });
    try {
      await readBack(cluster.address, acked);
    } finally {
      await cluster.stop();
    }
  });

  it('keeps every acknowledged write when every process is killed with SIGKILL', async () => {
    let cluster = await TestCluster.start({ workers: 3, dataDir });
    const acked = await fill(cluster.address, 'killed', 1500);
    for (const w of cluster.workers.values()) w.kill('SIGKILL');
    cluster.gateway.kill('SIGKILL');
    await Promise.all([...cluster.workers.values(), cluster.gateway].map((p) => p.exited()));
    cluster = await TestCluster.start({ workers: 3, dataDir });
    try {
      await readBack(cluster.address, acked);
      const kv = kvClient(cluster.address);
      expect((await kv.list()).filter((k) => k.startsWith('killed/'))).toHaveLength(1500);
      kv.close();
    } finally {
      await cluster.stop();
    }
  });
});
