// Snapshot scheduling for one worker: one snapshot at a time, executed on a piscina thread. A second
// request (another gateway's Backup) waits for the running one instead of being refused: refusing would
// make two gateways that start at the same moment fail each other on different workers.
import { existsSync } from 'node:fs';
import { readdir, rm, rmdir } from 'node:fs/promises';
import { join } from 'node:path';
import { status } from '@grpc/grpc-js';
import { Piscina } from 'piscina';
import { BACKUP_ID, mayStillRun, partFile, partManifestFile } from '../shared/backup-sets.js';
import { ensureDir } from '../shared/data-dir.js';
import { KvError } from '../shared/errors.js';
import type { SnapshotResult, SnapshotTask } from './snapshot-task.js';

/**
 * A snapshot request answered without attempting one (a bad or duplicate id, a full queue, another
 * membership epoch): not a failed backup of this worker, whose last snapshot stays good.
 */
export class SnapshotRefused extends KvError {}

/** Snapshots that may wait behind the running one; more means something is looping on Backup. */
const MAX_WAITING = 4;

export class Snapshotter {
  private readonly pool: Piscina<SnapshotTask, SnapshotResult>;
  private running: string | undefined;
  private waiting = 0;
  /** Ids running or waiting here: retention never touches their files. */
  private readonly pending = new Set<string>();
  private tail: Promise<unknown> = Promise.resolve();

  constructor(
    private readonly dbFile: string,
    readonly backupDir: string,
    private readonly worker: string,
  ) {
    this.pool = new Piscina({
      filename: new URL('./snapshot-task.js', import.meta.url).href,
      minThreads: 0,
      maxThreads: 1,
      idleTimeout: 30_000,
    });
  }

  get busy(): boolean {
    return this.running !== undefined;
  }

  async take(backupId: string): Promise<SnapshotResult> {
    if (!BACKUP_ID.test(backupId)) {
      throw new SnapshotRefused(status.INVALID_ARGUMENT, `backup id must match ${BACKUP_ID.source} (a UTC timestamp), got ${JSON.stringify(backupId)}`);
    }
    if (this.pending.has(backupId)) {
      throw new SnapshotRefused(status.ALREADY_EXISTS, `worker ${this.worker} is already taking (or waiting to take) a snapshot for backup ${backupId}`);
    }
    if (this.waiting >= MAX_WAITING) {
      throw new SnapshotRefused(status.RESOURCE_EXHAUSTED, `worker ${this.worker}: ${this.waiting} snapshots are already waiting behind ${this.running ?? 'another'}; try later`);
    }
    this.waiting++;
    this.pending.add(backupId);
    const prev = this.tail;
    const mine = prev
      .catch(() => undefined)
      .then(() => {
        this.waiting--;
        return this.run(backupId);
      })
      .finally(() => this.pending.delete(backupId));
    this.tail = mine.catch(() => undefined);
    return mine;
  }

  private async run(backupId: string): Promise<SnapshotResult> {
    const dir = join(this.backupDir, backupId);
    if (existsSync(join(dir, partFile(this.worker)))) {
      throw new SnapshotRefused(status.ALREADY_EXISTS, `worker ${this.worker} already has a snapshot for backup ${backupId} in ${dir}; refusing to overwrite it`);
    }
    try {
      ensureDir(dir, 'backup set folder');
    } catch (err) {
      // Made here rather than on the thread, so the gateway's answer says what is wrong, not INTERNAL
      // (the gateway names the worker).
      throw new KvError(status.FAILED_PRECONDITION, (err as Error).message);
    }
    this.running = backupId;
    try {
      return await this.pool.run({ source: this.dbFile, dir, id: backupId, worker: this.worker });
    } finally {
      this.running = undefined;
    }
  }

  /**
   * Deletes this worker's files of a snapshot it took but may not keep (the membership changed while
   * it was taken): without them no one can rebuild a set from the parts (kvctl --from-parts) that
   * mixes two rings.
   */
  async discard(backupId: string): Promise<void> {
    await this.removeMine(backupId);
  }

  /**
   * Deletes this worker's files of set `id` (final or partial), then the folder if nothing else is in
   * it (in the embedded setup it holds the other workers' files and the gateway's manifest too).
   * True if any file was there.
   */
  private async removeMine(id: string): Promise<boolean> {
    const dir = join(this.backupDir, id);
    const mine = [partFile(this.worker), `${partFile(this.worker)}.partial`, partManifestFile(this.worker), `${partManifestFile(this.worker)}.partial`];
    let touched = false;
    for (const f of mine) {
      if (existsSync(join(dir, f))) {
        await rm(join(dir, f), { force: true });
        touched = true;
      }
    }
    // ENOTEMPTY: others' files remain; fine.
    await rmdir(dir).catch(() => undefined);
    return touched;
  }

  /**
   * Retention on this worker's own volume: deletes this worker's files of every set older than
   * `before` (the oldest set the gateway keeps). Only this worker's files: in the embedded setup the
   * folder is shared with the other workers and the gateway's manifest. A set that is running or
   * waiting here, or younger than `minAgeMs`, is left alone: another gateway's backup may have an
   * older id than the set that triggered this prune and still be under way. Returns the ids touched.
   */
  async prune(before: string, minAgeMs = 0): Promise<string[]> {
    if (!BACKUP_ID.test(before)) throw new KvError(status.INVALID_ARGUMENT, `prune: "before" must be a backup id, got ${JSON.stringify(before)}`);
    let names: string[];
    try {
      names = await readdir(this.backupDir);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return [];
      throw err;
    }
    const pruned: string[] = [];
    const now = Date.now();
    const doomed = names.filter((n) => BACKUP_ID.test(n) && n < before && !this.pending.has(n) && !mayStillRun(n, minAgeMs, now));
    for (const id of doomed.sort()) if (await this.removeMine(id)) pruned.push(id);
    return pruned;
  }

  async close(): Promise<void> {
    await this.pool.destroy();
  }
}
