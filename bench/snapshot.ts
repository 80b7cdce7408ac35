// Measures how to take a worker's snapshot while a writer keeps committing (issue 3): VACUUM INTO
// from a second, read-only connection (what worker/snapshot-task.ts does) against SQLite's online
// backup API driven from a second connection, stepped 100 pages at a time (better-sqlite3's default)
// and in one step. Prints figures; asserts nothing. Run: npm run bench:snapshot -- [options]
//   --keys N (default 200000)  --value-bytes N (default 200)  --limit-s N (give up on a copy, default 20)
import { mkdtempSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Worker, isMainThread, parentPort, workerData } from 'node:worker_threads';
import Database from 'better-sqlite3';

interface WriterData {
  file: string;
  keys: number;
  valueBytes: number;
  control: SharedArrayBuffer;
}

const STOP = 0;
const COMMITS = 1;

function setupDb(file: string, keys: number, valueBytes: number): void {
  const db = new Database(file);
  db.pragma('journal_mode = WAL');
  db.pragma('synchronous = NORMAL');
  db.exec('CREATE TABLE kv (key TEXT PRIMARY KEY NOT NULL, value TEXT NOT NULL) WITHOUT ROWID');
  const put = db.prepare('INSERT INTO kv (key, value) VALUES (?, ?)');
  const fill = db.transaction((from: number, to: number) => {
    for (let i = from; i < to; i++) put.run(`key-${i}`, 'v'.repeat(valueBytes));
  });
  for (let i = 0; i < keys; i += 10_000) fill(i, Math.min(keys, i + 10_000));
  db.pragma('wal_checkpoint(TRUNCATE)');
  db.close();
}

/** The worker's write pattern: small transactions of upserts, as the gateway's batches arrive. */
function writer({ file, keys, valueBytes, control }: WriterData): void {
  const ctl = new Int32Array(control);
  const db = new Database(file);
  db.pragma('synchronous = NORMAL');
  db.pragma('busy_timeout = 5000');
  const put = db.prepare('INSERT INTO kv (key, value) VALUES (?, ?) ON CONFLICT (key) DO UPDATE SET value = excluded.value');
  let n = 0;
  const batch = db.transaction(() => {
    for (let i = 0; i < 20; i++) put.run(`key-${(n * 7919 + i * 104729) % keys}`, `${n}`.padEnd(valueBytes, 'w'));
  });
  const pause = new Int32Array(new SharedArrayBuffer(4));
  while (Atomics.load(ctl, STOP) === 0) {
    batch();
    n++;
    Atomics.add(ctl, COMMITS, 1);
    // ~1 ms between commits: a steady write load rather than a CPU-bound loop.
    Atomics.wait(pause, 0, 0, 1);
  }
  db.close();
  parentPort?.postMessage('done');
}

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

async function main(): Promise<void> {
  const arg = (name: string, def: number): number => {
    const i = process.argv.indexOf(`--${name}`);
    return i > 0 ? Number(process.argv[i + 1]) : def;
  };
  const keys = arg('keys', 200_000);
  const valueBytes = arg('value-bytes', 200);
  const limitS = arg('limit-s', 20);
  const dir = mkdtempSync(join(tmpdir(), 'kvstore-bench-snapshot-'));
  const file = join(dir, 'worker.sqlite');
  try {
    setupDb(file, keys, valueBytes);
    const mb = (f: string): string => (statSync(f).size / 1e6).toFixed(1);
    console.log(`database: ${keys} keys x ${valueBytes} B values, ${mb(file)} MB; writer: 20 upserts per commit, ~1 ms apart; give-up limit ${limitS} s`);

    const control = new SharedArrayBuffer(8);
    const ctl = new Int32Array(control);
    const thread = new Worker(new URL(import.meta.url), { workerData: { file, keys, valueBytes, control } satisfies WriterData });
    const commits = (): number => Atomics.load(ctl, COMMITS);
    await sleep(500);

    const rows: string[][] = [['method', 'result', 'seconds', 'restarts', 'writer commits/s during', 'snapshot keys / integrity / file']];
    let c0 = commits();
    let t0 = performance.now();
    await sleep(2000);
    rows.push(['(no snapshot: writer alone)', '-', '2.00', '-', ((commits() - c0) / 2).toFixed(0), '-']);

    const verify = (f: string): string => {
      const db = new Database(f, { readonly: true });
      try {
        return `${db.prepare('SELECT count(*) FROM kv').pluck().get() as number} / ${String(db.pragma('integrity_check', { simple: true }))} / ${mb(f)} MB`;
      } finally {
        db.close();
      }
    };

    // 1. VACUUM INTO from a read-only connection: one read transaction, one point-in-time copy.
    const vacTarget = join(dir, 'vacuum-into.sqlite');
    const src = new Database(file, { readonly: true });
    c0 = commits();
    t0 = performance.now();
    src.prepare('VACUUM INTO ?').run(vacTarget);
    let s = (performance.now() - t0) / 1000;
    src.close();
    rows.push(['VACUUM INTO (read-only connection)', 'complete', s.toFixed(2), '0', ((commits() - c0) / s).toFixed(0), verify(vacTarget)]);
    // Note: this VACUUM INTO ran on the main thread here and the writer on another; in the worker it
    // runs on a piscina thread and the writer is the event loop, so point operations keep flowing too.

    // 2. Online backup API from a second connection, 100 pages per step (better-sqlite3's default):
    // every commit by the writer's connection restarts the copy from page 1.
    for (const [label, pages] of [
      ['backup API, 100 pages/step', 100],
      ['backup API, all pages in one step', 0x7fffffff],
    ] as const) {
      const target = join(dir, `backup-${pages}.sqlite`);
      const source = new Database(file, { readonly: true });
      let restarts = 0;
      let lastRemaining = Number.POSITIVE_INFINITY;
      c0 = commits();
      t0 = performance.now();
      let result = 'complete';
      try {
        await source.backup(target, {
          progress: ({ remainingPages, totalPages }) => {
            if (remainingPages > lastRemaining) restarts++;
            lastRemaining = remainingPages;
            if (performance.now() - t0 > limitS * 1000) {
              throw new Error(`gave up after ${limitS} s: ${remainingPages} of ${totalPages} pages left, ${restarts} restarts`);
            }
            return pages;
          },
        });
      } catch (err) {
        result = `NOT complete (${(err as Error).message})`;
      }
      s = (performance.now() - t0) / 1000;
      source.close();
      rows.push([label, result, s.toFixed(2), String(restarts), ((commits() - c0) / s).toFixed(0), result === 'complete' ? verify(target) : '-']);
    }

    Atomics.store(ctl, STOP, 1);
    await new Promise((r) => thread.once('message', r));
    await thread.terminate();

    const widths = rows[0].map((_, i) => Math.max(...rows.map((r) => r[i].length)));
    for (const r of rows) console.log(r.map((c, i) => c.padEnd(widths[i])).join('  '));
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

if (isMainThread) {
  main().catch((err: unknown) => {
    console.error(err);
    process.exit(1);
  });
} else {
  writer(workerData as WriterData);
}
