// Runs in a piscina thread, off the worker's event loop, so point reads and writes keep flowing.
// VACUUM INTO from a separate read connection copies one point-in-time view of a WAL database without
// blocking the writer. The online backup API, stepped from a second connection, restarts whenever
// another connection writes, so under continuous writes it may never finish (bench/snapshot.ts measures
// both; docs/backup.md has the figures).
import { createHash } from 'node:crypto';
import { createReadStream, existsSync } from 'node:fs';
import { mkdir, rename, rm, stat, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import Database from 'better-sqlite3';
import { MANIFEST_FORMAT, partFile, partManifestFile, type PartManifest } from '../shared/backup-sets.js';

export interface SnapshotTask {
  source: string;
  /** The set's folder: <backup dir>/<id>. */
  dir: string;
  id: string;
  worker: string;
}

export interface SnapshotResult {
  file: string;
  keys: number;
  bytes: number;
  sha256: string;
  seconds: number;
}

async function sha256File(file: string): Promise<string> {
  const hash = createHash('sha256');
  for await (const chunk of createReadStream(file)) hash.update(chunk as Buffer);
  return hash.digest('hex');
}

export default async function snapshot({ source, dir, id, worker }: SnapshotTask): Promise<SnapshotResult> {
  const started = process.hrtime.bigint();
  const createdAt = new Date().toISOString();
  const target = join(dir, partFile(worker));
  // Two gateways can pick the same millisecond id. Never overwrite a file another manifest may already
  // describe: the second attempt fails instead (Snapshotter checks first and answers ALREADY_EXISTS).
  if (existsSync(target)) throw new Error(`${target} already exists; refusing to overwrite a snapshot of backup ${id}`);
  // Snapshotter made the folder; a prune or retention on a shared volume may have removed it while
  // this thread started. One level, never recursive (that hangs on some paths, shared/data-dir.ts).
  await mkdir(dir).catch((err: NodeJS.ErrnoException) => {
    if (err.code !== 'EEXIST') throw err;
  });
  const temp = `${target}.partial`;
  await rm(temp, { force: true });
  try {
    // A reader can still meet SQLITE_BUSY in WAL mode (e.g. while the WAL index is rebuilt after a
    // crash); wait for it rather than fail the backup. The timeout is SQLite's own, in milliseconds.
    const src = new Database(source, { readonly: true, fileMustExist: true, timeout: 10_000 });
    try {
      src.prepare('VACUUM INTO ?').run(temp);
    } finally {
      src.close();
    }
    let keys: number;
    const copy = new Database(temp, { readonly: true, fileMustExist: true });
    try {
      const check = copy.pragma('integrity_check', { simple: true });
      if (check !== 'ok') throw new Error(`integrity_check of ${temp} failed: ${String(check)}`);
      keys = copy.prepare('SELECT count(*) FROM kv').pluck().get() as number;
    } finally {
      copy.close();
    }
    const sha256 = await sha256File(temp);
    const { size } = await stat(temp);
    // Only a complete, verified file ever carries the final name.
    await rename(temp, target);
    const seconds = Number(process.hrtime.bigint() - started) / 1e9;
    const part: PartManifest = { format: MANIFEST_FORMAT, id, created_at: createdAt, worker, file: partFile(worker), keys, bytes: size, sha256, seconds };
    // The part manifest lets a worker's volume stand on its own (Kubernetes: separate volumes).
    const partPath = join(dir, partManifestFile(worker));
    await writeFile(`${partPath}.partial`, JSON.stringify(part, null, 2) + '\n');
    await rename(`${partPath}.partial`, partPath);
    return { file: target, keys, bytes: size, sha256, seconds };
  } catch (err) {
    await rm(temp, { force: true });
    throw err;
  }
}
