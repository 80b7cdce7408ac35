// Coordinates one backup set: a shared id (UTC timestamp), a snapshot from every worker, and a
// manifest written only when every worker's file is written and verified; then retention. One backup
// at a time per gateway (a second call is refused with a message naming the running one); workers
// serialize snapshots, which covers several gateways.
import { mkdir, rename, rm, rmdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { ensureDir } from '../shared/data-dir.js';
import {
  FAILED_FILE,
  MANIFEST_FILE,
  MANIFEST_FORMAT,
  STILL_RUNNING_MARGIN_MS,
  listSets,
  newBackupId,
  partFile,
  setsToPrune,
  type FailureRecord,
  type Manifest,
} from '../shared/backup-sets.js';
import type { Logger } from '../shared/logger.js';
import type { Cluster } from './cluster.js';
import { describeFailures, fanout } from './fanout.js';
import { prune, snapshot } from './worker-rpc.js';

export { MANIFEST_FILE, newBackupId, type Manifest };

export interface BackupOutcome {
  success: boolean;
  message: string;
  id: string;
  dir: string;
  keys: number;
  bytes: number;
  failedWorkers: string[];
}

export interface BackupOptions {
  backupDir: string;
  timeoutMs: number;
  /** Complete sets to keep (KV_BACKUP_KEEP); at least 1. */
  keep: number;
}

/** What the coordinator reports to metrics; kept narrow so the metrics module stays the owner of names. */
export interface BackupObserver {
  finished(outcome: 'success' | 'failure' | 'refused', seconds: number, bytes: number): void;
  pruned(sets: number): void;
}

async function writeJsonAtomically(file: string, value: unknown): Promise<void> {
  await writeFile(`${file}.partial`, JSON.stringify(value, null, 2) + '\n');
  await rename(`${file}.partial`, file);
}

/** A Backup call that took nothing: no id, no folder. */
function refusal(message: string): BackupOutcome {
  return failure('', '', message);
}

/** A Backup call that failed: nothing counted as backed up; `dir` is the incomplete set's folder. */
function failure(id: string, dir: string, message: string, failedWorkers: string[] = []): BackupOutcome {
  return { success: false, id, dir, keys: 0, bytes: 0, failedWorkers, message };
}

export class BackupCoordinator {
  private running: string | undefined;

  constructor(
    private readonly cluster: Cluster,
    private readonly options: BackupOptions,
    private readonly log: Logger,
    private readonly observer?: BackupObserver,
  ) {
    if (!Number.isInteger(options.keep) || options.keep < 1) throw new Error(`backup keep must be an integer of at least 1, got ${options.keep}`);
  }

  async run(): Promise<BackupOutcome> {
    if (this.running) {
      this.observer?.finished('refused', 0, 0);
      // No id and no folder: this call wrote nothing.
      return refusal(`backup refused: backup ${this.running} is still running on this gateway; nothing was written for this call, try again when it finishes`);
    }
    // Set before the first await, so a call arriving meanwhile is refused.
    this.running = newBackupId();
    try {
      let claimed: { id: string; dir: string };
      try {
        claimed = await this.claimId();
      } catch (err) {
        const id = newBackupId();
        this.log.error({ err }, 'cannot create a backup folder');
        this.observer?.finished('failure', 0, 0);
        // Every cause names the path already (ensureDir's message, Node's mkdir error, the id search).
        const message = `backup failed: ${(err as Error).message}; no worker was asked for a snapshot`;
        return failure(id, join(this.options.backupDir, id), message);
      }
      const { id, dir } = claimed;
      this.running = id;
      return await this.runLocked(id, dir);
    } finally {
      this.running = undefined;
    }
  }

  /**
   * Creates the set's folder under a fresh id. Two gateway replicas sharing one backup volume can pick
   * the same millisecond; mkdir fails for the second, which moves on to the next millisecond. (With
   * separate volumes the workers refuse the duplicate: a snapshot file is never overwritten.)
   */
  private async claimId(): Promise<{ id: string; dir: string }> {
    ensureDir(this.options.backupDir, 'backup directory');
    const t = Date.now();
    for (let i = 0; i < 100; i++) {
      const id = newBackupId(new Date(t + i));
      const dir = join(this.options.backupDir, id);
      try {
        await mkdir(dir);
        return { id, dir };
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
      }
    }
    throw new Error(`no free backup id in ${this.options.backupDir} from ${newBackupId(new Date(t))} on: 100 folders exist`);
  }

  private async runLocked(id: string, dir: string): Promise<BackupOutcome> {
    const started = Date.now();
    this.log.info({ backupId: id, dir }, 'backup started');
    const seconds = (): number => (Date.now() - started) / 1000;
    // Another gateway may have started a migration this one has not heard of yet: ask the workers.
    // (They also refuse a snapshot unless they are at this epoch with nothing moving, before and after
    // taking it, which covers a migration that starts while the snapshots run.)
    await this.cluster.refresh();
    const state = this.cluster.state;
    if (state.previous) {
      // Keys are moving between workers: a set taken now could miss keys in flight. Not a failed set,
      // and nothing is left behind: the folder claimed for it is still empty.
      await rmdir(dir).catch(() => undefined);
      this.observer?.finished('refused', 0, 0);
      return refusal(`backup ${id} not taken: workers are being added or removed (epoch ${state.epoch}); back up after the migration completes (kvctl cluster status)`);
    }
    // The ring the manifest describes is the one the snapshots were asked of.
    const ring = this.cluster.ring.describe();
    const { ok, failed } = await fanout(this.cluster.all(), (link) => snapshot(link.client, link.name, id, state.epoch, this.options.timeoutMs));
    if (failed.length > 0) {
      const record: FailureRecord = {
        format: MANIFEST_FORMAT,
        id,
        created_at: new Date(started).toISOString(),
        complete: false,
        failed: failed.map((f) => ({ worker: f.worker, reason: f.reason })),
        succeeded: [...ok.keys()].sort(),
      };
      // A record of the failure, never a manifest: nothing may mistake this folder for a complete set.
      try {
        ensureDir(dir, 'backup set folder');
        await writeJsonAtomically(join(dir, FAILED_FILE), record);
      } catch (err) {
        this.log.warn({ err, backupId: id }, 'could not write the failure record');
      }
      const message = `backup ${id} failed: ${failed.length} of ${ok.size + failed.length} workers failed: ${describeFailures(failed)}; no manifest written, the set in ${dir} is incomplete`;
      this.log.error({ backupId: id, failed }, 'backup failed');
      this.observer?.finished('failure', seconds(), 0);
      return failure(id, dir, message, failed.map((f) => f.worker));
    }
    const workers = [...ok.values()]
      .map((r) => ({ worker: r.worker, file: partFile(r.worker), keys: r.keys, bytes: r.bytes, sha256: r.sha256, seconds: r.seconds }))
      .sort((a, b) => (a.worker < b.worker ? -1 : 1));
    const manifest: Manifest = {
      format: MANIFEST_FORMAT,
      id,
      created_at: new Date(started).toISOString(),
      finished_at: new Date().toISOString(),
      duration_seconds: seconds(),
      complete: true,
      epoch: state.epoch,
      ring,
      workers,
      total_keys: workers.reduce((n, w) => n + w.keys, 0),
      total_bytes: workers.reduce((n, w) => n + w.bytes, 0),
    };
    try {
      // Not made again if missing: a folder removed while the backup ran may have taken parts with it.
      await writeJsonAtomically(join(dir, MANIFEST_FILE), manifest);
    } catch (err) {
      this.log.error({ err, backupId: id }, 'cannot write the backup manifest');
      this.observer?.finished('failure', seconds(), 0);
      const message = `backup ${id} failed: every worker wrote its part, but the manifest could not be written in ${dir}: ${(err as Error).message}; the set is incomplete`;
      return failure(id, dir, message);
    }
    this.log.info({ backupId: id, keys: manifest.total_keys, bytes: manifest.total_bytes, seconds: manifest.duration_seconds }, 'backup complete');
    this.observer?.finished('success', manifest.duration_seconds, manifest.total_bytes);
    const retention = await this.applyRetention(id).catch((err: unknown) => {
      // The new set is complete either way; a failed prune only leaves old sets behind.
      this.log.error({ err }, 'backup retention failed');
      return `; retention failed: ${(err as Error).message}`;
    });
    return {
      success: true,
      id,
      dir,
      keys: manifest.total_keys,
      bytes: manifest.total_bytes,
      failedWorkers: [],
      message: `backup ${id} complete: ${workers.length} workers, ${manifest.total_keys} keys, ${manifest.total_bytes} bytes in ${dir}${retention}`,
    };
  }

  /**
   * Keeps the newest `keep` complete sets (shared/backup-sets.ts says which go). Deletes whole set
   * folders in the gateway's own backup dir, then asks every worker to delete its own files of sets
   * older than the oldest kept one, which matters when workers have volumes of their own.
   */
  private async applyRetention(written: string): Promise<string> {
    const sets = listSets(this.options.backupDir);
    // A set younger than this may still be written by another gateway (see setsToPrune).
    const runningForMs = this.options.timeoutMs + STILL_RUNNING_MARGIN_MS;
    // Never the set just written, which this call is about to report: another gateway's backup may
    // have finished meanwhile with a newer id, and with keep 1 the rule alone would delete ours.
    const doomed = setsToPrune(sets, this.options.keep, runningForMs).filter((s) => s.id !== written);
    for (const s of doomed) await rm(s.dir, { recursive: true, force: true });
    if (doomed.length > 0) {
      this.log.info({ pruned: doomed.map((s) => `${s.id} (${s.state})`), keep: this.options.keep }, 'old backup sets deleted');
      this.observer?.pruned(doomed.length);
    }
    const complete = sets.filter((s) => s.state === 'complete').map((s) => s.id);
    // Workers are told to prune only once `keep` complete sets exist: before that, a worker's older
    // files may belong to a set another gateway replica recorded as complete.
    if (complete.length < this.options.keep) return '';
    const oldestKept = complete.slice(-this.options.keep)[0];
    const before = written < oldestKept ? written : oldestKept;
    const { failed } = await fanout(this.cluster.all(), (link) => prune(link.client, link.name, before, runningForMs, 60_000));
    if (failed.length > 0) {
      this.log.warn({ failed }, 'some workers could not prune old backup files');
      return `; old backup files not pruned on ${describeFailures(failed)}`;
    }
    return '';
  }
}
