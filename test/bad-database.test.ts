// A worker's database file that is not SQLite, or is damaged, at start: the worker refuses to start with
// a clear error and leaves the file byte for byte as it was. A full disk (simulated with SQLite's
// max_page_count): writes fail with RESOURCE_EXHAUSTED and a clear message, reads keep working, and
// nothing stored is damaged.
import { createHash, randomBytes } from 'node:crypto';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import Database from 'better-sqlite3';
import { afterAll, describe, expect, it } from 'vitest';
import { grpc, kvClient } from './helpers/client.js';
import { Proc, TestCluster, dist } from './helpers/processes.js';
import { reportFigures } from './helpers/verifier.js';
import { holdInstanceLock } from '../worker/store.js';

const dirs: string[] = [];
afterAll(() => {
  for (const d of dirs) rmSync(d, { recursive: true, force: true });
});

function tempDir(): string {
  const d = mkdtempSync(join(tmpdir(), 'kvstore-baddb-'));
  dirs.push(d);
  return d;
}

const sha = (file: string): string => createHash('sha256').update(readFileSync(file)).digest('hex');

/** Starts a worker on `dir`; resolves with its exit code and output if it refuses to start. */
async function startWorker(dir: string, args: string[] = []): Promise<{ started: boolean; output: string; proc: Proc }> {
  const proc = new Proc(dist('worker/main.js'), ['--name', 'worker-0', '--host', '127.0.0.1', '--port', '0', '--metrics-port', '0', '--data-dir', dir, ...args]);
  try {
    await proc.start();
    return { started: true, output: proc.output.join(''), proc };
  } catch {
    await proc.exited();
    return { started: false, output: proc.output.join(''), proc };
  }
}

/** A real worker database with `n` keys, closed cleanly (WAL folded back). */
function realDatabase(file: string, n: number): void {
  const db = new Database(file);
  db.pragma('journal_mode = WAL');
  db.exec('CREATE TABLE IF NOT EXISTS kv (key TEXT PRIMARY KEY NOT NULL, value TEXT NOT NULL) WITHOUT ROWID');
  const put = db.prepare('INSERT INTO kv (key, value) VALUES (?, ?)');
  db.transaction(() => {
    for (let i = 0; i < n; i++) put.run(`k/${i}`, `value-${i}-${'z'.repeat(200)}`);
  })();
  db.pragma('wal_checkpoint(TRUNCATE)');
  db.close();
}

describe('a database another worker has open', () => {
  it('a second worker on the same file refuses to start, naming the file; once the first stops, it starts', async () => {
    // Before: a second `npm start` on the same --data-dir (other ports) ran a second set of workers on
    // the same SQLite files, with membership state naming the first store's addresses.
    const dir = tempDir();
    const first = await startWorker(dir);
    expect(first.started, first.output).toBe(true);
    try {
      const second = await startWorker(dir);
      expect(second.started, second.output).toBe(false);
      expect(await second.proc.exited()).toBe(1);
      expect(second.output).toMatch(
        new RegExp(`worker failed to start: database ${join(dir, 'worker-0.sqlite').replace(/[.*+?^${}()|[\]\\]/g, '\\$&')} is in use by another process \\(SQLITE_BUSY\\): another worker named worker-0 is running on this data directory`),
      );
    } finally {
      expect(await first.proc.stop()).toBe(0);
    }
    const again = await startWorker(dir);
    expect(again.started, again.output).toBe(true);
    expect(await again.proc.stop()).toBe(0);
  }, 60_000);

  it('of workers started on one fresh data directory at the same instant, exactly one runs', async () => {
    // Before: the check probed the database and then opened it, and skipped a database not created
    // yet, so workers started together on a fresh folder all ran on one file. Now the first to take
    // the instance lock (worker-0.sqlite-lock) runs and the others refuse.
    for (let round = 0; round < 2; round++) {
      const dir = tempDir();
      const all = await Promise.all(Array.from({ length: 4 }, () => startWorker(dir)));
      const running = all.filter((w) => w.started);
      try {
        expect(running.length, all.map((w) => w.output).join('\n')).toBe(1);
        for (const w of all.filter((x) => !x.started)) {
          expect(await w.proc.exited()).toBe(1);
          expect(w.output).toMatch(/is in use by another process \(SQLITE_BUSY\)/);
        }
      } finally {
        for (const w of running) await w.proc.stop();
      }
    }
  }, 90_000);

  it('the lock is held for the worker\'s whole life and freed by kill -9; a holder keeps a new worker out', async () => {
    const dir = tempDir();
    const file = join(dir, 'worker-0.sqlite');
    const inUse = (code: string): string => `held (${code})`;
    // Something else holds it (kvctl restore does, while it writes): the worker refuses, even with
    // no database file yet.
    const held = holdInstanceLock(file, inUse);
    const refused = await startWorker(dir);
    held.release();
    expect(refused.started, refused.output).toBe(false);
    expect(refused.output).toMatch(/is in use by another process \(SQLITE_BUSY\)/);

    const worker = await startWorker(dir);
    expect(worker.started, worker.output).toBe(true);
    expect(() => holdInstanceLock(file, inUse)).toThrow('held (SQLITE_BUSY)');
    worker.proc.kill('SIGKILL');
    await worker.proc.exited();
    holdInstanceLock(file, inUse).release();
  }, 60_000);
});

describe('bad database file at start', () => {
  const cases: { name: string; make: (file: string) => void; expect: RegExp }[] = [
    { name: 'random bytes', make: (f) => writeFileSync(f, randomBytes(64 * 1024)), expect: /not an SQLite database/ },
    { name: 'a text file', make: (f) => writeFileSync(f, 'key,value\nhello,world\n'), expect: /not an SQLite database/ },
    {
      name: 'SQLite header, damaged schema page',
      make: (f) => {
        realDatabase(f, 100);
        const bytes = readFileSync(f);
        randomBytes(3000).copy(bytes, 100); // page 1 after the 100-byte header: the schema b-tree
        writeFileSync(f, bytes);
      },
      expect: /cannot open database .*(malformed|not a database|corrupt)/i,
    },
    {
      name: 'SQLite file truncated mid-page',
      make: (f) => {
        realDatabase(f, 2000);
        const bytes = readFileSync(f);
        writeFileSync(f, bytes.subarray(0, Math.floor(bytes.length / 2) + 123));
      },
      expect: /cannot open database .*worker-0\.sqlite: .*(malformed|corrupt)/i,
    },
    {
      name: 'SQLite file with damaged data pages',
      make: (f) => {
        realDatabase(f, 2000);
        const bytes = readFileSync(f);
        randomBytes(4096 * 3).copy(bytes, 4096 * 20); // three pages in the middle of the table
        writeFileSync(f, bytes);
      },
      expect: /cannot open database .*worker-0\.sqlite: .*malformed/i,
    },
  ];

  for (const c of cases) {
    it(`refuses to start on ${c.name} and leaves the file byte-identical`, async () => {
      const dir = tempDir();
      const file = join(dir, 'worker-0.sqlite');
      c.make(file);
      const before = sha(file);
      const r = await startWorker(dir);
      if (r.started) await r.proc.stop();
      reportFigures('bad-database-file', { case: c.name, refused: !r.started, exit: await r.proc.exited(), fileUnchanged: sha(file) === before });
      expect(r.started, r.output).toBe(false);
      expect(await r.proc.exited()).toBe(1);
      expect(r.output).toMatch(c.expect);
      expect(sha(file)).toBe(before);
      expect(existsSync(`${file}-wal`) && readFileSync(`${file}-wal`).length > 0).toBe(false);
    });
  }
});

describe('disk full (max_page_count)', () => {
  it('refuses writes with RESOURCE_EXHAUSTED and a clear message, keeps reads working and stored data intact', async () => {
    const dir = tempDir();
    const cluster = await TestCluster.start({ workers: 1, dataDir: dir, workerArgs: ['--max-db-pages', '40'] });
    const kv = kvClient(cluster.address);
    const acked = new Map<string, string>();
    let refused: grpc.ServiceError | undefined;
    let attempts = 0;
    try {
      // Bounded: 40 pages of 4 KiB hold well under 500 values of 1 KiB.
      for (let i = 0; i < 500 && !refused; i++) {
        const k = `full/${i}`;
        const v = `${i}:${'f'.repeat(1000)}`;
        attempts++;
        try {
          await kv.put(k, v);
          acked.set(k, v);
        } catch (err) {
          refused = err as grpc.ServiceError;
        }
      }
      expect(refused, 'the store never filled up').toBeDefined();
      expect(refused!.code).toBe(grpc.status.RESOURCE_EXHAUSTED);
      expect(refused!.details).toMatch(/worker-0.*storage is full/);
      // Further writes keep failing cleanly; every acknowledged value reads back unchanged.
      let refusedAgain = 0;
      for (let i = 0; i < 20; i++) {
        try {
          await kv.put(`full/more/${i}`, 'x'.repeat(2000));
        } catch (err) {
          expect((err as grpc.ServiceError).code).toBe(grpc.status.RESOURCE_EXHAUSTED);
          refusedAgain++;
        }
      }
      for (const [k, v] of acked) expect(await kv.get(k)).toBe(v);
      const listed = (await kv.list()).filter((k) => k.startsWith('full/'));
      expect(listed.filter((k) => !acked.has(k))).toEqual([]);
      // Deleting frees room: the store is usable again without a restart.
      const [firstKey] = acked.keys();
      await kv.del(firstKey);
      await kv.put(firstKey, 'room again');
      acked.set(firstKey, 'room again');
      expect(await kv.get(firstKey)).toBe('room again');
      kv.close();
      expect(await cluster.worker('worker-0').stop()).toBe(0);
      const db = new Database(join(dir, 'worker-0.sqlite'), { readonly: true });
      const integrity = db.pragma('integrity_check', { simple: true });
      const rows = db.prepare('SELECT count(*) FROM kv').pluck().get();
      db.close();
      reportFigures('disk-full', {
        maxDbPages: 40,
        writesBeforeFull: acked.size + 1,
        writesAttempted: attempts + 20,
        refusedWithResourceExhausted: 1 + refusedAgain,
        message: refused!.details,
        keysReadBackIntact: acked.size,
        writeAfterDeleteSucceeded: true,
        integrityCheck: integrity,
      });
      expect(refusedAgain).toBeGreaterThan(0);
      expect(integrity).toBe('ok');
      expect(rows).toBe(acked.size);
    } finally {
      kv.close();
      await cluster.stop();
    }
  });
});
