// Coordinates one backup set: a shared id (UTC timestamp), a snapshot from every worker, and a
// manifest written only when every worker's file is written and verified. One backup at a time per
// gateway; workers also refuse a second concurrent snapshot, which covers several gateways.
import { mkdir, rename, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import type { Logger } from '../shared/logger.js';
import type { Cluster } from './cluster.js';
import { describeFailures, fanout } from './fanout.js';
import { snapshot } from './worker-rpc.js';

export interface BackupOutcome {
  success: boolean;
  message: string;
  id: string;
  dir: string;
}

export interface Manifest {
  id: string;
  created_at: string;
  complete: true;
  ring: { members: string[]; algorithm: string; vnodes: number; replicas: number };
  workers: { worker: string; file: string; keys: number; bytes: number; sha256: string }[];
  total_keys: number;
  total_bytes: number;
}

export const MANIFEST_FILE = 'manifest.json';

/** 20261126T193742123Z: sortable, unique per millisecond, safe in file names. */
export function newBackupId(now = new Date()): string {
  return now.toISOString().replace(/[-:]/g, '').replace('.', '');
}

export class BackupCoordinator {
  private running: string | undefined;

  constructor(
    private readonly cluster: Cluster,
    private readonly backupDir: string,
    private readonly timeoutMs: number,
    private readonly log: Logger,
  ) {}

  async run(): Promise<BackupOutcome> {
    const id = newBackupId();
    const dir = join(this.backupDir, id);
    if (this.running) {
      return { success: false, id, dir, message: `backup ${this.running} is still running; try again when it finishes` };
    }
    this.running = id;
    try {
      return await this.runLocked(id, dir);
    } finally {
      this.running = undefined;
    }
  }

  private async runLocked(id: string, dir: string): Promise<BackupOutcome> {
    const started = Date.now();
    this.log.info({ backupId: id, dir }, 'backup started');
    if (this.cluster.state.previous) {
      return { success: false, id, dir, message: `backup ${id} not taken: workers are being added or removed (epoch ${this.cluster.epoch}); back up after the migration completes (kvctl cluster status)` };
    }
    const { ok, failed } = await fanout(this.cluster.all(), (link) => snapshot(link.client, link.name, id, this.timeoutMs));
    if (failed.length > 0) {
      const message = `backup ${id} failed: ${failed.length} of ${this.cluster.members.length} workers failed: ${describeFailures(failed)}; no manifest written, the set in ${dir} is incomplete`;
      this.log.error({ backupId: id, failed }, 'backup failed');
      return { success: false, id, dir, message };
    }
    const workers = [...ok.values()]
      .map((r) => ({ worker: r.worker, file: `${r.worker}.sqlite`, keys: r.keys, bytes: r.bytes, sha256: r.sha256 }))
      .sort((a, b) => (a.worker < b.worker ? -1 : 1));
    const manifest: Manifest = {
      id,
      created_at: new Date(started).toISOString(),
      complete: true,
      ring: this.cluster.ring.describe(),
      workers,
      total_keys: workers.reduce((n, w) => n + w.keys, 0),
      total_bytes: workers.reduce((n, w) => n + w.bytes, 0),
    };
    await mkdir(dir, { recursive: true });
    const temp = join(dir, `${MANIFEST_FILE}.partial`);
    await writeFile(temp, JSON.stringify(manifest, null, 2) + '\n');
    await rename(temp, join(dir, MANIFEST_FILE));
    const seconds = (Date.now() - started) / 1000;
    this.log.info({ backupId: id, keys: manifest.total_keys, bytes: manifest.total_bytes, seconds }, 'backup complete');
    return {
      success: true,
      id,
      dir,
      message: `backup ${id} complete: ${workers.length} workers, ${manifest.total_keys} keys, ${manifest.total_bytes} bytes in ${dir}`,
    };
  }
}
