// Runs in a piscina thread, off the worker's event loop, so point reads and writes keep flowing.
// VACUUM INTO from a separate read connection copies one point-in-time view of a WAL database without
// blocking the writer. (The online backup API restarts whenever another connection writes, so under
// continuous writes it may never finish; see README, Backups.)
import { createHash } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { mkdir, rename, rm, stat } from 'node:fs/promises';
import { dirname } from 'node:path';
import Database from 'better-sqlite3';

export interface SnapshotTask {
  source: string;
  target: string;
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

export default async function snapshot({ source, target }: SnapshotTask): Promise<SnapshotResult> {
  const started = process.hrtime.bigint();
  await mkdir(dirname(target), { recursive: true });
  const temp = `${target}.partial`;
  await rm(temp, { force: true });
  const src = new Database(source, { readonly: true, fileMustExist: true });
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
  return { file: target, keys, bytes: size, sha256, seconds };
}
