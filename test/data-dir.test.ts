// A --data-dir that cannot be created is a clear start-up error, never a hang: Node 20's recursive
// mkdirSync loops forever on a path under /proc (mkdir answers ENOENT though the parent exists), and the
// blocked process ignores SIGTERM. shared/data-dir.ts makes each level itself; the worker and
// `kvctl restore` use it, and so do Backup's folders (the async recursive mkdir never settles there).
import { createHash } from 'node:crypto';
import { spawnSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, statSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import Database from 'better-sqlite3';
import { afterAll, describe, expect, it } from 'vitest';
import { ensureDir } from '../shared/data-dir.js';
import { Ring } from '../shared/ring.js';
import { kvClient } from './helpers/client.js';
import { TestCluster, dist } from './helpers/processes.js';
import type { BackupStatus } from '../shared/proto.js';

const dirs: string[] = [];
afterAll(() => dirs.forEach((d) => rmSync(d, { recursive: true, force: true })));

function tempDir(): string {
  const d = mkdtempSync(join(tmpdir(), 'kvstore-datadir-'));
  dirs.push(d);
  return d;
}

const UNCREATABLE = '/proc/kvstore-nope/data';
// As root the mkdir itself fails (ENOENT); as anyone else the check before it does ("/proc" is not
// writable). Either way the error names the path and comes at once.
const WHY = '(ENOENT|"/proc" is not writable)';
const escape = (s: string): string => s.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');

/**
 * Runs a dist script; a hung one is killed after 15 s. SIGKILL, since a process stuck in a synchronous
 * loop never runs its SIGTERM handler (spawnSync would wait for it forever).
 */
function run(script: string, args: string[]): { status: number | null; signal: string | null; output: string } {
  const r = spawnSync(process.execPath, [dist(script), ...args], { encoding: 'utf8', timeout: 15_000, killSignal: 'SIGKILL' });
  return { status: r.status, signal: r.signal, output: `${r.stdout}${r.stderr}` };
}

describe('ensureDir', () => {
  it('creates missing nested levels, and is fine when the directory exists', () => {
    const dir = join(tempDir(), 'a', 'b', 'c');
    ensureDir(dir, 'data directory');
    expect(statSync(dir).isDirectory()).toBe(true);
    ensureDir(dir, 'data directory');
    expect(statSync(dir).isDirectory()).toBe(true);
  });

  it('refuses a path through a regular file, naming the path and the file', () => {
    const root = tempDir();
    const file = join(root, 'plain-file');
    writeFileSync(file, 'not a folder');
    expect(() => ensureDir(join(file, 'data'), 'data directory')).toThrow(`cannot create data directory "${join(file, 'data')}": "${file}" is not a directory`);
    expect(() => ensureDir(file, 'data directory')).toThrow(`cannot use data directory "${file}": not a directory`);
    expect(readFileSync(file, 'utf8')).toBe('not a folder');
  });

  it('names the missing target of a dangling symbolic link (a volume not mounted)', () => {
    const root = tempDir();
    const link = join(root, 'data');
    symlinkSync(join(root, 'unmounted', 'volume'), link);
    expect(() => ensureDir(link, 'data directory')).toThrow(`cannot create data directory "${link}": "${link}" is a symbolic link to "${join(root, 'unmounted', 'volume')}", which does not exist`);
  });

  it(`fails at once on ${UNCREATABLE} instead of looping`, () => {
    expect(() => ensureDir(UNCREATABLE, 'data directory')).toThrow(new RegExp(`^cannot create data directory "${escape(UNCREATABLE)}": ${WHY}`));
  });
});

describe('an uncreatable --data-dir', () => {
  it('makes the worker exit 1 with an error naming the path', () => {
    const r = run('worker/main.js', ['--name', 'w', '--host', '127.0.0.1', '--port', '0', '--metrics-port', '0', '--data-dir', UNCREATABLE]);
    expect(r.signal, `killed after 15 s: the worker hung\n${r.output}`).toBeNull();
    expect(r.status, r.output).toBe(1);
    // The worker's fatal log line (JSON, so the quotes are escaped).
    expect(r.output).toMatch(new RegExp(`worker failed to start: cannot create data directory ${escape(`\\"${UNCREATABLE}\\"`)}: ${WHY.replace('"/proc"', escape('\\"/proc\\"'))}`));
  });

  it('makes kvctl restore exit 1 with an error naming the path', () => {
    // A one-worker backup set, just enough to pass verification.
    const set = join(tempDir(), '20260101T000000000Z');
    mkdirSync(set);
    const file = join(set, 'w.sqlite');
    const db = new Database(file);
    db.exec('CREATE TABLE kv (key TEXT PRIMARY KEY NOT NULL, value TEXT NOT NULL) WITHOUT ROWID');
    db.prepare('INSERT INTO kv (key, value) VALUES (?, ?)').run('k', 'v');
    db.close();
    const bytes = readFileSync(file);
    const part = { worker: 'w', file: 'w.sqlite', keys: 1, bytes: bytes.length, sha256: createHash('sha256').update(bytes).digest('hex'), seconds: 0 };
    const manifest = { format: 1, id: '20260101T000000000Z', created_at: '', finished_at: '', duration_seconds: 0, complete: true, ring: new Ring(['w']).describe(), workers: [part], total_keys: 1, total_bytes: bytes.length };
    writeFileSync(join(set, 'manifest.json'), JSON.stringify(manifest));

    const r = run('cli/kvctl.js', ['restore', set, '--data-dir', UNCREATABLE]);
    expect(r.signal, `killed after 15 s: kvctl hung\n${r.output}`).toBeNull();
    expect(r.output).toContain('verified backup 20260101T000000000Z');
    expect(r.status, r.output).toBe(1);
    expect(r.output).toMatch(new RegExp(`kvctl: cannot create data directory "${escape(UNCREATABLE)}": ${WHY}`));
  });
});

describe('an uncreatable backup folder', () => {
  // Each case: where the bad path is given, and what the answer must name. Before, the Backup call
  // never answered: fs.promises.mkdir({ recursive: true }) stays pending on such a path.
  const cases: [string, { gatewayArgs?: string[]; workerArgs?: string[] }, RegExp][] = [
    ['the gateway', { gatewayArgs: ['--backup-dir', '/proc/kvstore-nope/backups'] }, new RegExp(`^backup failed: cannot create backup directory "/proc/kvstore-nope/backups": ${WHY}.*; no worker was asked`)],
    ['a worker', { workerArgs: ['--backup-dir', '/proc/kvstore-nope/snapshots'] }, new RegExp(`worker-0 \\(.*FAILED_PRECONDITION: cannot create backup set folder "/proc/kvstore-nope/snapshots/\\d{8}T\\d{9}Z": ${WHY}`)],
  ];
  for (const [who, args, says] of cases) {
    it(`given to ${who}, fails the Backup call at once with an answer naming it`, async () => {
      const cluster = await TestCluster.start({ workers: 1, ...args });
      const kv = kvClient(cluster.address, 20_000);
      try {
        const status = (await kv.backup()) as BackupStatus;
        expect(status.success).toBe(false);
        expect(status.message).toMatch(says);
      } finally {
        kv.close();
        await cluster.stop();
      }
    }, 60_000);
  }
});
