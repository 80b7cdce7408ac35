// The whole restore loop with real processes and the real kvctl: fill a 3-worker store, back it up,
// then restore into an empty data directory (same workers), into 5 workers and into 2, start each and
// read every key back through the gateway. Restore refuses a running store and a tampered file.
import { spawnSync } from 'node:child_process';
import { cpSync, existsSync, mkdtempSync, openSync, readFileSync, readdirSync, rmSync, statSync, writeSync, closeSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import Database from 'better-sqlite3';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Ring } from '../shared/ring.js';
import { codeOf, grpc, kvClient } from './helpers/client.js';
import { TestCluster, dist } from './helpers/processes.js';

const KEYS = 2000;
let root: string;
let backupDir: string;
let backupId: string;
const expected = new Map<string, string>();
const deleted: string[] = [];

function kvctl(args: string[], address = '127.0.0.1:1'): { code: number | null; stdout: string; stderr: string } {
  const r = spawnSync(process.execPath, [dist('cli/kvctl.js'), '--address', address, '--timeout', '60000', ...args], { encoding: 'utf8', timeout: 60_000 });
  return { code: r.status, stdout: r.stdout, stderr: r.stderr };
}

const clusterFor = (dataDir: string, names: string[]): Promise<TestCluster> =>
  TestCluster.start({ names, dataDir, workerArgs: ['--backup-dir', backupDir], gatewayArgs: ['--backup-dir', backupDir] });

/** Reads every expected key (and every deleted one) through the gateway, 200 at a time. */
async function readBack(cluster: TestCluster): Promise<void> {
  const kv = kvClient(cluster.address, 20_000);
  try {
    const entries = [...expected];
    for (let i = 0; i < entries.length; i += 200) {
      const got = await Promise.all(entries.slice(i, i + 200).map(([k]) => kv.get(k)));
      got.forEach((v, j) => expect(v, `value of ${JSON.stringify(entries[i + j][0])}`).toBe(entries[i + j][1]));
    }
    for (const k of deleted) expect(await codeOf(kv.get(k))).toBe(grpc.status.NOT_FOUND);
    expect((await kv.list()).length).toBe(expected.size);
  } finally {
    kv.close();
  }
}

/** Each restored file holds exactly the keys its worker owns on the new ring. */
function assertPlacement(dataDir: string, names: string[]): void {
  const ring = new Ring(names);
  let total = 0;
  for (const n of names) {
    const db = new Database(join(dataDir, `${n}.sqlite`), { readonly: true });
    try {
      const keys = db.prepare('SELECT key FROM kv').pluck().all() as string[];
      for (const k of keys) expect(ring.owner(k), `owner of ${JSON.stringify(k)}`).toBe(n);
      total += keys.length;
    } finally {
      db.close();
    }
  }
  expect(total).toBe(expected.size);
}

const workerNames = (n: number): string[] => Array.from({ length: n }, (_, i) => `worker-${i}`);

beforeAll(async () => {
  root = mkdtempSync(join(tmpdir(), 'kvstore-restore-'));
  backupDir = join(root, 'backups');
  const dataDir = join(root, 'original');
  const cluster = await clusterFor(dataDir, workerNames(3));
  try {
    const kv = kvClient(cluster.address, 20_000);
    // Keys a restore must carry byte for byte: control characters, NUL, quotes, SQL and LIKE fragments.
    const odd = ['a', 'a\0', 'a\0b', ' spaced key ', "it's", '100%', 'x_y', "'; DROP TABLE kv; --", '\x01\x7f', 'k/'.repeat(64)];
    odd.forEach((k, i) => expected.set(k, `odd-${i}-\0-${'~'.repeat(i)}`));
    for (let i = 0; expected.size < KEYS; i++) expected.set(`key-${i}`, `value-${i}-${'v'.repeat(i % 300)}`);
    expected.set('empty-value', '');
    expected.set('big-value', 'B'.repeat(2048));
    const entries = [...expected];
    for (let i = 0; i < entries.length; i += 200) await Promise.all(entries.slice(i, i + 200).map(([k, v]) => kv.put(k, v)));
    for (let i = 0; i < 50; i++) {
      const k = `key-${i * 7}`;
      await kv.del(k);
      expected.delete(k);
      deleted.push(k);
    }
    kv.close();
    const r = kvctl(['backup'], cluster.address);
    expect(r.code, r.stderr).toBe(0);
    backupId = /^backup (\d{8}T\d{9}Z) complete/.exec(r.stdout)![1];
    expect(r.stdout).toContain(`location: ${join(backupDir, backupId)}`);
    expect(r.stdout).toMatch(new RegExp(`keys: +${expected.size}\\n`));

    // A running store's data directory is refused, and left as it was.
    const before = readdirSync(dataDir).sort();
    const refused = kvctl(['restore', backupId, '--data-dir', dataDir, '--backup-dir', backupDir]);
    expect(refused.code).toBe(1);
    expect(refused.stderr).toMatch(/in use \(SQLITE_BUSY.*a worker is still running/);
    expect(readdirSync(dataDir).sort()).toEqual(before);
  } finally {
    await cluster.stop();
  }
}, 120_000);

afterAll(() => {
  if (root) rmSync(root, { recursive: true, force: true });
});

describe('restore', () => {
  it('lists the set with its manifest figures', () => {
    const r = kvctl(['--json', 'backups', '--backup-dir', backupDir]);
    expect(r.code, r.stderr).toBe(0);
    const { sets } = JSON.parse(r.stdout) as { sets: { id: string; state: string; workers: number; keys: number; bytes: number }[] };
    expect(sets).toEqual([expect.objectContaining({ id: backupId, state: 'complete', workers: 3, keys: expected.size })]);
    expect(sets[0].bytes).toBeGreaterThan(0);
    const human = kvctl(['backups', '--backup-dir', backupDir]);
    expect(human.stdout).toContain(backupId);
    expect(kvctl(['verify', backupId, '--backup-dir', backupDir]).code).toBe(0);
  });

  it('says when the backup folder it was pointed at does not exist', () => {
    const missing = join(root, 'no-such-folder');
    const r = kvctl(['backups', '--backup-dir', missing]);
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout).toContain(`${missing} does not exist (check --data-dir / --backup-dir)`);
  });

  it('full loop: wiped data directory, restore, start, every key and value back', async () => {
    const dataDir = join(root, 'original');
    rmSync(dataDir, { recursive: true, force: true });
    const r = kvctl(['restore', backupId, '--data-dir', dataDir, '--backup-dir', backupDir]);
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout).toContain(`restored backup ${backupId} into ${dataDir} (files copied as they were): ${expected.size} keys`);
    const cluster = await clusterFor(dataDir, workerNames(3));
    try {
      await readBack(cluster);
    } finally {
      await cluster.stop();
    }
  });

  for (const n of [5, 2]) {
    it(`restores a 3-worker backup into ${n} workers, every key on its new owner`, async () => {
      const dataDir = join(root, `into-${n}`);
      const r = kvctl(['restore', join(backupDir, backupId), '--data-dir', dataDir, '--workers', String(n)]);
      expect(r.code, r.stderr).toBe(0);
      expect(r.stdout).toContain('keys re-placed on the new ring');
      assertPlacement(dataDir, workerNames(n));
      const cluster = await clusterFor(dataDir, workerNames(n));
      try {
        await readBack(cluster);
      } finally {
        await cluster.stop();
      }
    });
  }

  it('keeps a stopped store\'s previous files aside when restoring over them', () => {
    const dataDir = join(root, 'into-2');
    const r = kvctl(['--json', 'restore', backupId, '--data-dir', dataDir, '--backup-dir', backupDir]);
    expect(r.code, r.stderr).toBe(0);
    const out = JSON.parse(r.stdout) as { mode: string; moved_aside: string };
    expect(out.mode).toBe('copy');
    // The 2-worker files went aside; none of them is left where a worker would open it.
    expect(readdirSync(out.moved_aside).sort()).toEqual(['worker-0.sqlite', 'worker-1.sqlite']);
    expect(readdirSync(dataDir).filter((f) => f.endsWith('.sqlite')).sort()).toEqual(['worker-0.sqlite', 'worker-1.sqlite', 'worker-2.sqlite']);
    assertPlacement(dataDir, workerNames(3));
  });

  it('rebuilds a lost manifest from the workers\' part manifests when told the members', () => {
    const copy = join(root, 'parts-only');
    cpSync(join(backupDir, backupId), copy, { recursive: true });
    rmSync(join(copy, 'manifest.json'));
    expect(kvctl(['verify', copy]).stderr).toMatch(/not a complete backup set: no manifest.json/);
    // An id that is not in the folder looked in (the README's commands without the right --data-dir):
    // the message says where it looked and how to look elsewhere, not only that a manifest is missing.
    for (const cmd of ['verify', 'restore']) {
      const absent = kvctl([cmd, '20200101T000000000Z', '--data-dir', join(root, 'no-such-data')]);
      expect(absent.code, absent.stderr).toBe(1);
      expect(absent.stderr).toContain(`${join(root, 'no-such-data', 'backups', '20200101T000000000Z')} is not a complete backup set: no manifest.json`);
      expect(absent.stderr).toMatch(/no such folder: .*--data-dir or --backup-dir.*kvctl backups/);
    }
    const missing = kvctl(['verify', copy, '--from-parts', 'worker-0,worker-1,worker-2,worker-3']);
    expect(missing.code).toBe(1);
    expect(missing.stderr).toContain('worker-3.json');
    // A part manifest copied over another worker's would restore worker-2's keys twice and worker-1's never.
    const own = readFileSync(join(copy, 'worker-1.json'));
    cpSync(join(copy, 'worker-2.json'), join(copy, 'worker-1.json'));
    const misplaced = kvctl(['verify', copy, '--from-parts', 'worker-0,worker-1,worker-2']);
    expect(misplaced.code).toBe(1);
    expect(misplaced.stderr).toMatch(/worker-1\.json describes worker "worker-2" and file "worker-2\.sqlite", expected worker-1 and worker-1\.sqlite/);
    writeFileSync(join(copy, 'worker-1.json'), own);
    const dataDir = join(root, 'from-parts');
    const r = kvctl(['--json', 'restore', copy, '--data-dir', dataDir, '--from-parts', 'worker-0,worker-1,worker-2', '--workers', '2']);
    expect(r.code, r.stderr).toBe(0);
    expect(JSON.parse(r.stdout)).toMatchObject({ id: backupId, mode: 'reshard', keys: expected.size });
    assertPlacement(dataDir, workerNames(2));
  });

  it('refuses a tampered file, naming it, and restores nothing', () => {
    const copy = join(root, 'tampered');
    cpSync(join(backupDir, backupId), copy, { recursive: true });
    const file = join(copy, 'worker-1.sqlite');
    // Flip one byte in the middle of the file: still the same size, a different checksum.
    const size = statSync(file).size;
    const fd = openSync(file, 'r+');
    const at = Math.floor(size / 2);
    const byte = readFileSync(file)[at];
    writeSync(fd, Buffer.from([byte ^ 0xff]), 0, 1, at);
    closeSync(fd);
    const dataDir = join(root, 'from-tampered');
    const r = kvctl(['restore', copy, '--data-dir', dataDir]);
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(/failed verification; nothing was restored/);
    expect(r.stderr).toContain(`${file} has SHA-256`);
    expect(existsSync(dataDir) ? readdirSync(dataDir) : []).toEqual([]);
    expect(kvctl(['verify', copy]).code).toBe(1);
  });

  it('names a damaged part manifest along with every other problem, and restores nothing', () => {
    const copy = join(root, 'bad-part');
    cpSync(join(backupDir, backupId), copy, { recursive: true });
    writeFileSync(join(copy, 'worker-0.json'), '{oops');
    rmSync(join(copy, 'worker-2.sqlite'));
    const dataDir = join(root, 'from-bad-part');
    const r = kvctl(['restore', copy, '--data-dir', dataDir]);
    expect(r.code).toBe(1);
    // Before: "kvctl: Expected property name or '}' in JSON at position 1", and nothing about worker-2.
    expect(r.stderr).toMatch(/failed verification; nothing was restored/);
    expect(r.stderr).toContain(`${join(copy, 'worker-0.json')} cannot be read as a part manifest`);
    expect(r.stderr).toContain(`${join(copy, 'worker-2.sqlite')} is missing`);
    expect(existsSync(dataDir) ? readdirSync(dataDir) : []).toEqual([]);
  });
});
