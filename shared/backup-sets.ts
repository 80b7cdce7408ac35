// What a backup set looks like on disk, shared by the gateway (writes manifests, applies retention),
// the worker (writes its part, prunes its own files) and kvctl (lists, verifies, restores):
//
//   <backup dir>/<id>/<worker>.sqlite   the worker's snapshot (VACUUM INTO, verified, then renamed)
//   <backup dir>/<id>/<worker>.json     the worker's part manifest (written after the file is final)
//   <backup dir>/<id>/manifest.json     the gateway's manifest: only when EVERY worker succeeded
//   <backup dir>/<id>/failed.json       the gateway's record of a failed attempt (never a manifest)
//
// A set is complete if and only if manifest.json exists and parses with complete: true. In the
// embedded setup all of these share one folder; in Kubernetes each worker's volume holds its parts and
// the gateway's volume holds the manifests (docs/backup.md says how to gather them).
import { readFileSync, readdirSync, statSync } from 'node:fs';
import { join } from 'node:path';
import type { SnapshotReply } from './proto.js';

export const MANIFEST_FILE = 'manifest.json';
export const FAILED_FILE = 'failed.json';
export const MANIFEST_FORMAT = 1;

/** 20261126T193742123Z: sortable as text, unique per millisecond, safe in file names. */
export const BACKUP_ID = /^\d{8}T\d{9}Z$/;

export function newBackupId(now = new Date()): string {
  return now.toISOString().replace(/[-:]/g, '').replace('.', '');
}

/** When a set was started (ms since the epoch): its id is the gateway's UTC clock then. NaN if not an id. */
export function backupIdTime(id: string): number {
  const m = /^(\d{4})(\d{2})(\d{2})T(\d{2})(\d{2})(\d{2})(\d{3})Z$/.exec(id);
  return m ? Date.UTC(+m[1], +m[2] - 1, +m[3], +m[4], +m[5], +m[6], +m[7]) : Number.NaN;
}

/**
 * Added to a gateway's backup timeout to say how long a set may still be being written: another
 * gateway may start a backup a moment before this one (an older id) and finish after it, and clocks
 * of different machines differ a little.
 */
export const STILL_RUNNING_MARGIN_MS = 60_000;

/** True if a set started less than `windowMs` ago (or in the future), so its backup may still run. */
export function mayStillRun(id: string, windowMs: number, now = Date.now()): boolean {
  const t = backupIdTime(id);
  return Number.isNaN(t) || now - t < windowMs;
}

export interface RingDescription {
  members: string[];
  algorithm: string;
  vnodes: number;
  replicas: number;
}

/** One worker's file in a set: exactly what its Snapshot call answered. */
export type WorkerPart = SnapshotReply;

/** Written by a worker next to its file, so a worker's volume alone says what it holds. */
export interface PartManifest extends WorkerPart {
  format: number;
  id: string;
  created_at: string;
}

export interface Manifest {
  format: number;
  id: string;
  created_at: string;
  finished_at: string;
  duration_seconds: number;
  complete: true;
  /** Membership epoch of the ring below (absent in sets from before it was recorded). */
  epoch?: number;
  ring: RingDescription;
  workers: WorkerPart[];
  total_keys: number;
  total_bytes: number;
}

export interface FailureRecord {
  format: number;
  id: string;
  created_at: string;
  complete: false;
  failed: { worker: string; reason: string }[];
  succeeded: string[];
}

export interface SetInfo {
  id: string;
  dir: string;
  /** complete: a valid manifest; failed: the gateway recorded a failure; incomplete: neither (running, or crashed). */
  state: 'complete' | 'failed' | 'incomplete';
  manifest?: Manifest;
  failure?: FailureRecord;
  /** Why a manifest that exists was not accepted. */
  problem?: string;
}

export function partFile(worker: string): string {
  return `${worker}.sqlite`;
}

export function partManifestFile(worker: string): string {
  return `${worker}.json`;
}

/** Parses and sanity-checks a manifest; throws with the file name and what is wrong. */
export function readManifest(file: string): Manifest {
  let m: Manifest;
  try {
    m = JSON.parse(readFileSync(file, 'utf8')) as Manifest;
  } catch (err) {
    throw new Error(`cannot read backup manifest ${file}: ${(err as Error).message}`, { cause: err });
  }
  const bad = (why: string): never => {
    throw new Error(`backup manifest ${file} is not valid: ${why}`);
  };
  if (typeof m !== 'object' || m === null) bad('not a JSON object');
  if (m.complete !== true) bad('it does not say complete: true');
  if (typeof m.id !== 'string' || !BACKUP_ID.test(m.id)) bad(`bad id ${JSON.stringify(m.id)}`);
  if (!Array.isArray(m.workers) || m.workers.length === 0) bad('no workers listed');
  if (!m.ring || !Array.isArray(m.ring.members)) bad('no ring members');
  for (const w of m.workers) {
    if (typeof w.worker !== 'string' || typeof w.file !== 'string' || typeof w.sha256 !== 'string' || !Number.isInteger(w.bytes) || !Number.isInteger(w.keys)) {
      bad(`worker entry ${JSON.stringify(w)} lacks worker, file, keys, bytes or sha256`);
    }
    // A manifest names files inside its own folder only: a crafted "../x" must not be read or trusted.
    if (w.file !== partFile(w.worker)) bad(`worker ${w.worker} names file ${JSON.stringify(w.file)}, expected ${partFile(w.worker)}`);
  }
  const names = m.workers.map((w) => w.worker).sort();
  if (names.join(',') !== [...m.ring.members].sort().join(',')) {
    bad(`workers [${names.join(', ')}] differ from ring members [${m.ring.members.join(', ')}]`);
  }
  return m;
}

function isDir(p: string): boolean {
  try {
    return statSync(p).isDirectory();
  } catch {
    return false;
  }
}

/** Every backup set folder under `backupDir`, oldest first. A missing folder has no sets. */
export function listSets(backupDir: string): SetInfo[] {
  let names: string[];
  try {
    names = readdirSync(backupDir);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return [];
    throw err;
  }
  const sets: SetInfo[] = [];
  for (const id of names.filter((n) => BACKUP_ID.test(n)).sort()) {
    const dir = join(backupDir, id);
    if (!isDir(dir)) continue;
    const info: SetInfo = { id, dir, state: 'incomplete' };
    let files: string[] = [];
    try {
      files = readdirSync(dir);
    } catch {
      // unreadable: reported as incomplete
    }
    if (files.includes(MANIFEST_FILE)) {
      try {
        info.manifest = readManifest(join(dir, MANIFEST_FILE));
        info.state = 'complete';
      } catch (err) {
        info.problem = (err as Error).message;
      }
    }
    if (info.state !== 'complete' && files.includes(FAILED_FILE)) {
      info.state = 'failed';
      try {
        info.failure = JSON.parse(readFileSync(join(dir, FAILED_FILE), 'utf8')) as FailureRecord;
      } catch {
        // the folder still counts as failed; its record is just unreadable
      }
    }
    sets.push(info);
  }
  return sets;
}

/**
 * Retention: which set folders to delete so that the newest `keep` complete sets remain.
 * - Only ever called after a new complete set exists, and `keep` is at least 1, so the newest good
 *   set is never deleted.
 * - Complete sets older than the newest `keep` go.
 * - A failed set older than the newest complete set is superseded and goes.
 * - So does an incomplete one, but only once it is older than `runningForMs`: until then it may still
 *   be being written by another gateway, whose backup started first (an older id) and finishes later.
 * - A failed or incomplete set newer than the newest complete set stays (running, or worth a look).
 */
export function setsToPrune(sets: SetInfo[], keep: number, runningForMs = 0, now = Date.now()): SetInfo[] {
  const n = Math.max(1, Math.floor(keep));
  const complete = sets.filter((s) => s.state === 'complete').sort((a, b) => (a.id < b.id ? -1 : 1));
  if (complete.length === 0) return [];
  const kept = new Set(complete.slice(-n).map((s) => s.id));
  const newestComplete = complete[complete.length - 1].id;
  return sets.filter((s) => {
    if (kept.has(s.id)) return false;
    if (s.state === 'complete') return true;
    if (s.id >= newestComplete) return false;
    return s.state === 'failed' || !mayStillRun(s.id, runningForMs, now);
  });
}
