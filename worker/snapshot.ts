// Snapshot scheduling for one worker: at most one at a time (a second request is refused, so two
// Backup calls can never interleave writes into the same set), executed on a piscina thread.
import { join } from 'node:path';
import { Piscina } from 'piscina';
import { KvError } from '../shared/errors.js';
import { status } from '@grpc/grpc-js';
import type { SnapshotResult, SnapshotTask } from './snapshot-task.js';

const BACKUP_ID = /^[0-9A-Za-z][0-9A-Za-z._-]{0,127}$/;

export class Snapshotter {
  private readonly pool: Piscina<SnapshotTask, SnapshotResult>;
  private running: string | undefined;

  constructor(
    private readonly dbFile: string,
    private readonly backupDir: string,
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
      throw new KvError(status.INVALID_ARGUMENT, `backup id must match ${BACKUP_ID.source}, got ${JSON.stringify(backupId)}`);
    }
    if (this.running) {
      throw new KvError(status.ABORTED, `worker ${this.worker} is already taking snapshot ${this.running}`);
    }
    this.running = backupId;
    try {
      return await this.pool.run({ source: this.dbFile, target: join(this.backupDir, backupId, `${this.worker}.sqlite`) });
    } finally {
      this.running = undefined;
    }
  }

  async close(): Promise<void> {
    await this.pool.destroy();
  }
}
