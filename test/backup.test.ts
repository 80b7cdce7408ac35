// Backup while writers keep writing: every worker's snapshot opens, passes integrity_check, matches
// the manifest's checksum, and holds every key acknowledged before the Backup call began.
import { createHash } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import Database from 'better-sqlite3';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Ring } from '../shared/ring.js';
import { kvClient, type KvClient } from './helpers/client.js';
import { TestCluster } from './helpers/processes.js';

let cluster: TestCluster;
let kv: KvClient;

beforeAll(async () => {
  cluster = await TestCluster.start({ workers: 3 });
  kv = kvClient(cluster.address, 60_000);
});

afterAll(async () => {
  kv?.close();
  await cluster?.stop();
});

describe('online backup', () => {
  it('snapshots every worker consistently while writes continue', async () => {
    const acked = new Map<string, string>();
    let stop = false;
    let seq = 0;
    // Four writers, bounded in count and time, each writing its own keys.
    const writers = Array.from({ length: 4 }, async (_, w) => {
      const until = Date.now() + 20_000;
      for (let i = 0; !stop && i < 50_000 && Date.now() < until; i++) {
        const k = `bk/${w}/${i}`;
        const v = `v${seq++}`;
        await kv.put(k, v);
        acked.set(k, v);
      }
    });
    await new Promise((r) => setTimeout(r, 1500));
    const before = new Map(acked);
    const status = await kv.backup();
    const during = acked.size;
    await new Promise((r) => setTimeout(r, 300));
    stop = true;
    await Promise.all(writers);
    expect(status.success, status.message).toBe(true);
    expect(during).toBeGreaterThan(before.size); // writes were acknowledged while the backup ran
    const id = /backup (\S+) complete/.exec(status.message)![1];
    expect(status.message).toContain(join(cluster.backupDir, id));

    const manifest = JSON.parse(readFileSync(join(cluster.backupDir, id, 'manifest.json'), 'utf8')) as {
      id: string;
      workers: { worker: string; file: string; keys: number; bytes: number; sha256: string }[];
    };
    expect(manifest.id).toBe(id);
    expect(manifest.workers.map((w) => w.worker)).toEqual(['worker-0', 'worker-1', 'worker-2']);
    const ring = new Ring(['worker-0', 'worker-1', 'worker-2']);
    for (const entry of manifest.workers) {
      const file = join(cluster.backupDir, id, entry.file);
      const bytes = readFileSync(file);
      expect(createHash('sha256').update(bytes).digest('hex')).toBe(entry.sha256);
      expect(bytes.length).toBe(entry.bytes);
      const db = new Database(file, { readonly: true });
      try {
        expect(db.pragma('integrity_check', { simple: true })).toBe('ok');
        expect(db.prepare('SELECT count(*) FROM kv').pluck().get()).toBe(entry.keys);
        const get = db.prepare<[string], string>('SELECT value FROM kv WHERE key = ?').pluck();
        for (const [k, v] of before) {
          if (ring.owner(k) !== entry.worker) continue;
          // The value may be newer than `before` saw (written during the backup), never missing.
          const got = get.get(k);
          expect(got, `key ${k} in ${entry.worker}'s snapshot`).toBeDefined();
          expect(Number(got!.slice(1))).toBeGreaterThanOrEqual(Number(v.slice(1)));
        }
      } finally {
        db.close();
      }
    }
  });
});
