// Offline backup work for kvctl: verify a set, and restore it into a STOPPED store's data directory.
// No gRPC: restore is file work, done while every worker is down (a running worker would keep its
// open database and overwrite or ignore the restored file).
//
// Placement: restoring into the same worker names copies each verified file as it is. Restoring into
// other names or another count re-places every key on the worker that owns it on the new ring
// (shared/ring.ts, the same code the gateway routes with), so the restored store needs no rebalance.
import { createHash } from 'node:crypto';
import { closeSync, copyFileSync, existsSync, openSync, readSync, readFileSync, readdirSync, renameSync, rmSync, statSync } from 'node:fs';
import { join, resolve } from 'node:path';
import Database from 'better-sqlite3';
import { ensureDir } from '../shared/data-dir.js';
import { Ring } from '../shared/ring.js';
import { MANIFEST_FILE, partFile, partManifestFile, readManifest, type Manifest, type PartManifest } from '../shared/backup-sets.js';
import { OpType, type Op } from '../shared/proto.js';
import { Store, holdInstanceLock, lockConflict } from '../worker/store.js';

const BATCH = 2000;

export class RestoreError extends Error {}

/** An id under the backup dir, or a path to a set folder. */
export function resolveSetDir(idOrPath: string, backupDir: string): string {
  const asPath = resolve(idOrPath);
  if (idOrPath.includes('/') || (existsSync(asPath) && statSync(asPath).isDirectory() && existsSync(join(asPath, MANIFEST_FILE)))) return asPath;
  return resolve(backupDir, idOrPath);
}

function sha256(file: string): string {
  // Synchronous on purpose: kvctl does nothing else meanwhile; 1 MiB reads keep memory flat.
  const hash = createHash('sha256');
  const buf = Buffer.allocUnsafe(1 << 20);
  const fd = openSync(file, 'r');
  try {
    for (let n = readSync(fd, buf); n > 0; n = readSync(fd, buf)) hash.update(buf.subarray(0, n));
  } finally {
    closeSync(fd);
  }
  return hash.digest('hex');
}

export interface VerifiedSet {
  dir: string;
  manifest: Manifest;
}

/**
 * Checks a set before anything trusts it: a valid manifest listing every ring member, and for each
 * worker a file whose size and SHA-256 match the manifest (and the worker's part manifest, when
 * present), which passes integrity_check and holds the recorded number of keys. Every problem is
 * collected, so one run names every bad file.
 */
export function verifySet(dir: string, fromParts?: string[]): VerifiedSet {
  const manifestPath = join(dir, MANIFEST_FILE);
  if (fromParts) return verifyManifest(dir, manifestFromParts(dir, fromParts));
  if (!existsSync(manifestPath)) {
    const hint = existsSync(join(dir, 'failed.json')) ? ' (failed.json is there: this backup failed)' : existsSync(dir) ? '' : ' (no such folder: check the id, and say where the backups are with --data-dir or --backup-dir; `kvctl backups` lists the sets)';
    throw new RestoreError(`${dir} is not a complete backup set: no ${MANIFEST_FILE}${hint}`);
  }
  return verifyManifest(dir, readManifest(manifestPath));
}

/**
 * The gateway's manifest.json is lost (say, its volume was an emptyDir) but the workers' part manifests
 * survive: rebuild the manifest from them, for the members the operator names. Every member must have a
 * part of the same backup id; the files are then verified against the parts' checksums as usual.
 */
export function manifestFromParts(dir: string, members: string[]): Manifest {
  const ring = new Ring(members);
  const parts: PartManifest[] = [];
  const problems: string[] = [];
  for (const m of ring.members) {
    const f = join(dir, partManifestFile(m));
    let part: PartManifest;
    try {
      part = JSON.parse(readFileSync(f, 'utf8')) as PartManifest;
    } catch (err) {
      problems.push(`${f}: ${(err as Error).message}`);
      continue;
    }
    // A part copied from another worker (or edited) would restore that worker's keys twice and this
    // one's never, and a file outside the folder must not be read at all.
    if (part.worker !== m || part.file !== partFile(m)) {
      problems.push(`${f} describes worker ${JSON.stringify(part.worker)} and file ${JSON.stringify(part.file)}, expected ${m} and ${partFile(m)}`);
      continue;
    }
    parts.push(part);
  }
  const ids = new Set(parts.map((p) => p.id));
  if (ids.size > 1) problems.push(`part manifests name different backups: ${[...ids].join(', ')}`);
  if (problems.length > 0) throw new RestoreError(`cannot rebuild a manifest from the part manifests in ${dir}; nothing was restored:\n  ${problems.join('\n  ')}`);
  const workers = parts.map((p) => ({ worker: p.worker, file: p.file, keys: p.keys, bytes: p.bytes, sha256: p.sha256, seconds: p.seconds }));
  return {
    format: parts[0].format,
    id: parts[0].id,
    created_at: parts.map((p) => p.created_at).sort()[0],
    finished_at: '',
    duration_seconds: 0,
    complete: true,
    ring: ring.describe(),
    workers,
    total_keys: workers.reduce((n, w) => n + w.keys, 0),
    total_bytes: workers.reduce((n, w) => n + w.bytes, 0),
  };
}

function verifyManifest(dir: string, manifest: Manifest): VerifiedSet {
  const problems: string[] = [];
  for (const w of manifest.workers) {
    const file = join(dir, w.file);
    if (!existsSync(file)) {
      problems.push(`${file} is missing`);
      continue;
    }
    const size = statSync(file).size;
    if (size !== w.bytes) problems.push(`${file} is ${size} bytes, the manifest says ${w.bytes}`);
    const sum = sha256(file);
    if (sum !== w.sha256) {
      problems.push(`${file} has SHA-256 ${sum}, the manifest says ${w.sha256}: the file was changed or damaged`);
      continue;
    }
    const partPath = join(dir, partManifestFile(w.worker));
    if (existsSync(partPath)) {
      // A damaged part manifest is one more problem to name, not a bare JSON.parse message that
      // said neither which file nor that nothing was restored, and hid every other problem.
      let part: PartManifest | undefined;
      try {
        part = JSON.parse(readFileSync(partPath, 'utf8')) as PartManifest;
      } catch (err) {
        problems.push(`${partPath} cannot be read as a part manifest: ${(err as Error).message}`);
      }
      if (part && (part.sha256 !== w.sha256 || part.id !== manifest.id)) problems.push(`${partPath} disagrees with ${MANIFEST_FILE} (id ${part.id}, sha256 ${part.sha256})`);
    }
    const db = new Database(file, { readonly: true, fileMustExist: true });
    try {
      const check = db.pragma('integrity_check', { simple: true });
      if (check !== 'ok') problems.push(`${file} fails integrity_check: ${String(check)}`);
      const keys = db.prepare('SELECT count(*) FROM kv').pluck().get() as number;
      if (keys !== w.keys) problems.push(`${file} holds ${keys} keys, the manifest says ${w.keys}`);
    } catch (err) {
      problems.push(`${file} cannot be read as a kvstore database: ${(err as Error).message}`);
    } finally {
      db.close();
    }
  }
  if (problems.length > 0) {
    throw new RestoreError(`backup ${manifest.id} in ${dir} failed verification; nothing was restored:\n  ${problems.join('\n  ')}`);
  }
  return { dir, manifest };
}

/**
 * Refuses a data directory in use (worker/store.ts lockConflict). A store killed without a clean stop
 * leaves -wal/-shm files but no lock: that is stopped, and its files are moved aside like any other.
 */
export function assertStopped(dataDir: string): void {
  for (const f of databaseFiles(dataDir)) {
    const file = join(dataDir, f);
    let conflict: ReturnType<typeof lockConflict>;
    try {
      conflict = lockConflict(file);
    } catch (err) {
      throw new RestoreError(`${file} cannot be checked: ${(err as Error).message}`);
    }
    if (conflict) throw new RestoreError(`${file} is in use (${conflict.code}): a worker is still running on ${dataDir}; stop the store (every worker) before restoring`);
  }
}

/** Worker database files (<name>.sqlite) directly in the data directory. */
function databaseFiles(dataDir: string): string[] {
  if (!existsSync(dataDir)) return [];
  return readdirSync(dataDir).filter((f) => f.endsWith('.sqlite') && statSync(join(dataDir, f)).isFile());
}

export interface RestoreOptions {
  setDir: string;
  dataDir: string;
  /** Rebuild the manifest from the workers' part manifests of these members (manifest.json lost). */
  fromParts?: string[];
  /** Target worker names; default: the set's own members. */
  names?: string[];
  log?: (line: string) => void;
}

export interface RestoreResult {
  id: string;
  dataDir: string;
  mode: 'copy' | 'reshard';
  workers: { worker: string; keys: number }[];
  totalKeys: number;
  /** Where the data directory's previous database files went, if it had any. */
  movedAside?: string;
}

export function restore(opts: RestoreOptions): RestoreResult {
  const log = opts.log ?? (() => {});
  const { manifest } = verifySet(opts.setDir, opts.fromParts);
  log(`verified backup ${manifest.id}: ${manifest.workers.length} files, ${manifest.total_keys} keys, checksums match`);
  const names = opts.names ?? [...manifest.ring.members];
  const target = new Ring(names); // validates: non-empty, no duplicates
  ensureDir(opts.dataDir, 'data directory');
  assertStopped(opts.dataDir);
  // Held while the data directory changes, so that a worker starting meanwhile refuses to.
  const locks = lockWorkers(opts.dataDir, [...databaseFiles(opts.dataDir).map((f) => f.slice(0, -'.sqlite'.length)), ...names]);
  try {
    return restoreLocked(opts, manifest, names, target, log);
  } finally {
    for (const l of locks) l.release();
  }
}

/** The instance lock (worker/store.ts holdInstanceLock) of each named worker's database in `dataDir`. */
function lockWorkers(dataDir: string, names: string[]): { release(): void }[] {
  const held: { release(): void }[] = [];
  try {
    for (const name of new Set(names)) {
      const file = join(dataDir, `${name}.sqlite`);
      held.push(holdInstanceLock(file, (code) => `${file} is in use (${code}): a worker is starting or running on ${dataDir}; stop the store (every worker) before restoring`));
    }
    return held;
  } catch (err) {
    for (const l of held) l.release();
    throw new RestoreError((err as Error).message);
  }
}

function restoreLocked(opts: RestoreOptions, manifest: Manifest, names: string[], target: Ring, log: (line: string) => void): RestoreResult {
  const stamp = new Date().toISOString().replace(/[-:.]/g, '');
  const staging = join(opts.dataDir, `.restore-${manifest.id}-${stamp}`);
  rmSync(staging, { recursive: true, force: true });
  ensureDir(staging, 'restore staging folder');
  try {
    const same = [...names].sort().join(',') === [...manifest.ring.members].sort().join(',');
    const workers = same ? copyFiles(manifest, opts.setDir, staging) : reshard(manifest, opts.setDir, staging, target, log);
    const totalKeys = workers.reduce((n, w) => n + w.keys, 0);
    if (totalKeys !== manifest.total_keys) {
      // Only possible if the set held a key twice (taken while keys were moving between workers).
      log(`note: ${manifest.total_keys - totalKeys} keys were present on two workers in the backup; the owner's copy was kept`);
    }
    // Everything is staged; only now touch the data directory. Earlier files are kept, not deleted.
    const existing = databaseFiles(opts.dataDir);
    let movedAside: string | undefined;
    if (existing.length > 0) {
      movedAside = join(opts.dataDir, `pre-restore-${stamp}`);
      ensureDir(movedAside, 'folder for the previous database files');
      for (const f of readdirSync(opts.dataDir)) {
        if (existing.some((db) => f === db || f === `${db}-wal` || f === `${db}-shm`)) renameSync(join(opts.dataDir, f), join(movedAside, f));
      }
      log(`moved the data directory's previous database files to ${movedAside}`);
    }
    for (const w of workers) renameSync(join(staging, `${w.worker}.sqlite`), join(opts.dataDir, `${w.worker}.sqlite`));
    return { id: manifest.id, dataDir: opts.dataDir, mode: same ? 'copy' : 'reshard', workers, totalKeys, movedAside };
  } finally {
    rmSync(staging, { recursive: true, force: true });
  }
}

function copyFiles(manifest: Manifest, setDir: string, staging: string): { worker: string; keys: number }[] {
  return manifest.workers.map((w) => {
    const to = join(staging, `${w.worker}.sqlite`);
    copyFileSync(join(setDir, w.file), to);
    // The copy is what the store will run on: check it too, not just its source.
    if (sha256(to) !== w.sha256) throw new RestoreError(`copy of ${w.file} to ${to} does not match its checksum; nothing was restored`);
    forgetCluster(to);
    return { worker: w.worker, keys: w.keys };
  });
}

/**
 * A snapshot carries the membership its worker had (worker/membership.ts keeps it in the meta table:
 * epoch, members and their addresses) and any migration tombstones. A restored store is a new cluster
 * whose members and addresses come from the gateway's KV_MEMBERS, possibly on other hosts and ports:
 * the old state must not be adopted, so it is removed from the restored copy (never from the backup).
 */
function forgetCluster(file: string): void {
  const db = new Database(file, { fileMustExist: true });
  try {
    const tables = new Set(db.prepare("SELECT name FROM sqlite_master WHERE type = 'table'").pluck().all() as string[]);
    db.transaction(() => {
      if (tables.has('meta')) db.prepare("DELETE FROM meta WHERE name = 'membership'").run();
      if (tables.has('tombstones')) db.prepare('DELETE FROM tombstones').run();
    })();
  } finally {
    db.close();
  }
}

function reshard(manifest: Manifest, setDir: string, staging: string, target: Ring, log: (l: string) => void): { worker: string; keys: number }[] {
  const before = new Ring(manifest.ring.members);
  const stores = new Map(target.members.map((n) => [n, new Store(join(staging, `${n}.sqlite`), { sync: 'normal' })]));
  const pending = new Map<string, Op[]>(target.members.map((n) => [n, []]));
  let id = 0;
  const flush = (name: string): void => {
    const ops = pending.get(name)!;
    if (ops.length === 0) return;
    const results = stores.get(name)!.applyBatch(ops);
    const bad = results.find((r) => r.code !== 0);
    if (bad) throw new RestoreError(`writing ${name}.sqlite failed: ${bad.message}`);
    pending.set(name, []);
  };
  try {
    // Pass 1: each key from the worker that owned it when the backup was taken. Pass 2: copies found on
    // another worker (left over from a membership change) only where the owner had none.
    for (const pass of ['owned', 'stray'] as const) {
      for (const w of manifest.workers) {
        const src = new Database(join(setDir, w.file), { readonly: true, fileMustExist: true });
        try {
          for (const row of src.prepare('SELECT key, value FROM kv').iterate() as IterableIterator<{ key: string; value: string }>) {
            const owned = before.owner(row.key) === w.worker;
            if ((pass === 'owned') !== owned) continue;
            const to = target.owner(row.key);
            if (pass === 'stray') {
              flush(to);
              if (stores.get(to)!.get(row.key) !== undefined) continue;
            }
            const ops = pending.get(to)!;
            ops.push({ id: id++ & 0x7fffffff, type: OpType.PUT, key: row.key, value: row.value });
            if (ops.length >= BATCH) flush(to);
          }
        } finally {
          src.close();
        }
      }
      for (const name of target.members) flush(name);
    }
    const workers = target.members.map((n) => ({ worker: n, keys: stores.get(n)!.keys }));
    log(`re-placed ${manifest.total_keys} keys from [${manifest.ring.members.join(', ')}] onto [${target.members.join(', ')}]`);
    return workers;
  } finally {
    for (const s of stores.values()) s.close();
  }
}
