// Backups end to end on one 3-worker cluster (retention set to 2): a consistent set under continuous
// writes, two concurrent Backup calls (same gateway, and two gateways), retention, metrics, and a worker
// that is down. The down-worker case runs last because it stops a worker.
import { createHash } from 'node:crypto';
import { existsSync, mkdirSync, readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { basename, join } from 'node:path';
import Database from 'better-sqlite3';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { verifySet } from '../cli/restore.js';
import { snapshot } from '../gateway/worker-rpc.js';
import { workerApi, type BackupStatus } from '../shared/proto.js';
import { Ring } from '../shared/ring.js';
import { listSets, newBackupId, type Manifest, type PartManifest } from '../shared/backup-sets.js';
import { grpc, kvClient, type KvClient } from './helpers/client.js';
import { Proc, TestCluster, dist } from './helpers/processes.js';

let cluster: TestCluster;
let kv: KvClient;

beforeAll(async () => {
  cluster = await TestCluster.start({ workers: 3, gatewayArgs: ['--backup-keep', '2'] });
  kv = kvClient(cluster.address, 60_000);
});

afterAll(async () => {
  kv?.close();
  await cluster?.stop();
});

const backup = (client: KvClient = kv): Promise<BackupStatus> => client.backup() as Promise<BackupStatus>;

async function metrics(port: number): Promise<string> {
  const res = await fetch(`http://127.0.0.1:${port}/metrics`, { signal: AbortSignal.timeout(5000) });
  return res.text();
}

describe('backup', () => {
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
    const status = await backup();
    const during = acked.size;
    await new Promise((r) => setTimeout(r, 300));
    stop = true;
    await Promise.all(writers);
    expect(status.success, status.message).toBe(true);
    expect(during).toBeGreaterThan(before.size); // writes were acknowledged while the backup ran
    const id = status.backup_id;
    expect(id).toMatch(/^\d{8}T\d{9}Z$/);
    expect(status.location).toBe(join(cluster.backupDir, id));
    expect(status.message).toContain(join(cluster.backupDir, id));

    const manifest = JSON.parse(readFileSync(join(cluster.backupDir, id, 'manifest.json'), 'utf8')) as Manifest;
    expect(manifest).toMatchObject({ id, complete: true, ring: { members: ['worker-0', 'worker-1', 'worker-2'], algorithm: 'md5', vnodes: 160, replicas: 4 } });
    expect(Date.parse(manifest.created_at)).toBeGreaterThan(Date.now() - 120_000);
    expect(manifest.workers.map((w) => w.worker)).toEqual(['worker-0', 'worker-1', 'worker-2']);
    expect(status.keys).toBe(manifest.total_keys);
    expect(status.bytes).toBe(manifest.total_bytes);
    expect(manifest.total_keys).toBeGreaterThanOrEqual(before.size);
    const ring = new Ring(['worker-0', 'worker-1', 'worker-2']);
    for (const entry of manifest.workers) {
      const file = join(cluster.backupDir, id, entry.file);
      const bytes = readFileSync(file);
      expect(createHash('sha256').update(bytes).digest('hex')).toBe(entry.sha256);
      expect(bytes.length).toBe(entry.bytes);
      const part = JSON.parse(readFileSync(join(cluster.backupDir, id, `${entry.worker}.json`), 'utf8')) as PartManifest;
      expect(part).toMatchObject({ id, worker: entry.worker, sha256: entry.sha256, keys: entry.keys, bytes: entry.bytes });
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
    expect(() => verifySet(join(cluster.backupDir, id))).not.toThrow();
  });

  it('refuses a second Backup on the same gateway while one runs, without touching the first', async () => {
    const [a, b] = await Promise.all([backup(), backup()]);
    const [ok, refused] = a.success ? [a, b] : [b, a];
    expect(ok.success, ok.message).toBe(true);
    expect(refused.success).toBe(false);
    expect(refused.message).toMatch(/refused: backup \d{8}T\d{9}Z is still running/);
    expect(refused.backup_id).toBe('');
    expect(refused.location).toBe('');
    expect(verifySet(ok.location).manifest.id).toBe(ok.backup_id);
  });

  it('serializes Backups from two gateways on the workers: both sets complete and intact', async () => {
    const second = new Proc(dist('gateway/main.js'), ['--host', '127.0.0.1', '--port', '0', '--metrics-port', '0', '--members', cluster.members(), '--data-dir', cluster.dataDir, '--backup-keep', '10']);
    await second.start();
    const kv2 = kvClient(`127.0.0.1:${second.listening!.port}`, 60_000);
    try {
      const [a, b] = await Promise.all([backup(), backup(kv2)]);
      expect(a.success, a.message).toBe(true);
      expect(b.success, b.message).toBe(true);
      expect(a.backup_id).not.toBe(b.backup_id);
      for (const r of [a, b]) expect(verifySet(r.location).manifest.id).toBe(r.backup_id);
    } finally {
      kv2.close();
      await second.stop();
    }
  });

  it('keeps the newest KV_BACKUP_KEEP complete sets and clears superseded incomplete ones', async () => {
    // An abandoned incomplete set from long ago, one "from the future", and one started a moment ago
    // (as if another gateway's backup, with an older id than the two below, were still being written:
    // neither the gateway's retention nor worker-0's may delete it yet).
    const old = join(cluster.backupDir, '20000101T000000000Z');
    const future = join(cluster.backupDir, '29991231T235959999Z');
    const running = join(cluster.backupDir, newBackupId(new Date(Date.now() - 1000)));
    for (const d of [old, future, running]) {
      mkdirSync(d, { recursive: true });
      writeFileSync(join(d, 'worker-0.sqlite.partial'), 'partial');
    }
    const results = [];
    for (let i = 0; i < 2; i++) results.push(await backup());
    for (const r of results) expect(r.success, r.message).toBe(true);
    const sets = listSets(cluster.backupDir);
    const complete = sets.filter((s) => s.state === 'complete').map((s) => s.id);
    expect(complete).toEqual(results.map((r) => r.backup_id));
    expect(existsSync(old)).toBe(false);
    expect(existsSync(future)).toBe(true);
    expect(existsSync(join(running, 'worker-0.sqlite.partial'))).toBe(true);
    // Nothing but the kept sets (and the future and running ones) is left: no stray worker files of pruned sets.
    expect(readdirSync(cluster.backupDir).sort()).toEqual([...complete, '29991231T235959999Z', basename(running)].sort());
    rmSync(running, { recursive: true });
  });

  it('reports backups in the workers\' and gateway\'s metrics', async () => {
    const w = await metrics(cluster.worker('worker-0').listening!.metricsPort);
    expect(w).toMatch(/^kv_worker_last_backup_success\{worker="worker-0"\} 1$/m);
    expect(w).toMatch(/^kv_worker_backups_total\{outcome="success",worker="worker-0"\} [1-9]/m);
    expect(w).toMatch(/^kv_worker_backup_duration_seconds_count\{[^}]*outcome="success"[^}]*\} [1-9]/m);
    expect(w).toMatch(/^kv_worker_last_backup_bytes\{worker="worker-0"\} [1-9]/m);
    const g = await metrics(cluster.gateway.listening!.metricsPort);
    expect(g).toMatch(/^kv_gateway_backups_total\{outcome="success"\} [1-9]/m);
    expect(g).toMatch(/^kv_gateway_backups_total\{outcome="refused"\} 1$/m);
    expect(g).toMatch(/^kv_gateway_backup_sets_pruned_total [1-9]/m);
  });

  it('counts a refused snapshot as refused, not as a failed backup of the worker', async () => {
    const worker = cluster.worker('worker-0').listening!;
    const done = listSets(cluster.backupDir).filter((s) => s.state === 'complete').at(-1)!;
    const client = new (workerApi().Worker)(`127.0.0.1:${worker.port}`, grpc.credentials.createInsecure());
    try {
      // The id of a set this worker already holds: refused, nothing overwritten.
      await expect(snapshot(client, 'worker-0', done.id, 0, 10_000)).rejects.toThrow(/ALREADY_EXISTS/);
    } finally {
      client.close();
    }
    const w = await metrics(worker.metricsPort);
    expect(w).toMatch(/^kv_worker_backups_total\{outcome="refused",worker="worker-0"\} 1$/m);
    expect(w).toMatch(/^kv_worker_backups_total\{outcome="failure",worker="worker-0"\} 0$/m);
    // So the KvBackupFailed alert (last_backup_success == 0) stays quiet.
    expect(w).toMatch(/^kv_worker_last_backup_success\{worker="worker-0"\} 1$/m);
  });

  it('with keep 1, an older set that finishes after a newer one survives its own retention', async () => {
    // Two gateways sharing the backup folder, each keeping one set: B starts first (older id) but is
    // held up; A's backup completes meanwhile. B's retention must not delete the set it just wrote.
    const start = async (): Promise<{ proc: Proc; kv: KvClient }> => {
      // The last --backup-keep wins over the cluster's own 2.
      const { proc, address } = await cluster.startExtraGateway(['--backup-keep', '1']);
      return { proc, kv: kvClient(address, 60_000) };
    };
    const a = await start();
    const b = await start();
    try {
      const sets = (): string[] => (existsSync(cluster.backupDir) ? readdirSync(cluster.backupDir) : []);
      const existing = new Set(sets());
      const pendingB = backup(b.kv);
      // Hold B as soon as its set folder exists.
      const deadline = Date.now() + 10_000;
      while (!sets().some((d) => !existing.has(d)) && Date.now() < deadline) await new Promise((r) => setTimeout(r, 2));
      b.proc.kill('SIGSTOP');
      let ra: BackupStatus;
      try {
        ra = await backup(a.kv);
      } finally {
        b.proc.kill('SIGCONT');
      }
      const rb = await pendingB;
      expect(ra.success, ra.message).toBe(true);
      expect(rb.success, rb.message).toBe(true);
      expect(rb.backup_id < ra.backup_id).toBe(true);
      for (const r of [rb, ra]) expect(verifySet(r.location).manifest.id).toBe(r.backup_id);
    } finally {
      for (const g of [a, b]) {
        g.kv.close();
        g.proc.kill('SIGCONT');
        await g.proc.stop();
      }
    }
  });

  it('fails naming a worker that is down, and writes no manifest', async () => {
    await cluster.worker('worker-2').stop();
    const r = await backup();
    expect(r.success).toBe(false);
    expect(r.failed_workers).toEqual(['worker-2']);
    expect(r.message).toMatch(/1 of 3 workers failed: worker-2 \(/);
    expect(r.keys).toBe(0);
    expect(existsSync(join(r.location, 'manifest.json'))).toBe(false);
    const failed = JSON.parse(readFileSync(join(r.location, 'failed.json'), 'utf8')) as { complete: boolean; failed: { worker: string }[]; succeeded: string[] };
    expect(failed.complete).toBe(false);
    expect(failed.failed.map((f) => f.worker)).toEqual(['worker-2']);
    expect(failed.succeeded).toEqual(['worker-0', 'worker-1']);
    expect(listSets(cluster.backupDir).find((s) => s.id === r.backup_id)?.state).toBe('failed');
    expect(() => verifySet(r.location)).toThrow(/not a complete backup set/);
    const g = await metrics(cluster.gateway.listening!.metricsPort);
    expect(g).toMatch(/^kv_gateway_backups_total\{outcome="failure"\} 1$/m);
  });
});
