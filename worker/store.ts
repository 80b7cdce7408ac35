// All of a worker's SQL. One SQLite file in WAL mode, prepared statements only (never SQL built from
// strings). A batch of point operations is applied in one transaction: one commit (and with
// sync=full, one fsync) for every request the gateway gathered in one event-loop turn.
import { closeSync, existsSync, openSync, readSync, statSync } from 'node:fs';
import { status } from '@grpc/grpc-js';
import Database from 'better-sqlite3';
import { OpType, type Op, type OpResult } from '../shared/proto.js';

export type SyncMode = 'normal' | 'full';

export interface StoreOptions {
  sync: SyncMode;
  /** Cap on database pages (PRAGMA max_page_count); 0 = SQLite's default. Used to bound disk use. */
  maxPages?: number;
}

const SQLITE_HEADER = 'SQLite format 3\0';

/** Refuse a file that exists but is not an SQLite database, before SQLite touches it. */
function checkExistingFile(file: string): void {
  if (!existsSync(file)) return;
  const size = statSync(file).size;
  if (size === 0) return;
  const fd = openSync(file, 'r');
  try {
    const header = Buffer.alloc(16);
    readSync(fd, header, 0, 16, 0);
    if (header.toString('latin1') !== SQLITE_HEADER) {
      throw new Error(`${file} is not an SQLite database (bad header); refusing to start and leaving it untouched`);
    }
  } finally {
    closeSync(fd);
  }
}

/** The SQLite error codes (extended ones included) of a lock another connection holds. */
function isLockedOut(code: string): boolean {
  return code.startsWith('SQLITE_BUSY') || code.startsWith('SQLITE_LOCKED');
}

/**
 * Whether another process has `file` open: a running worker holds SQLite locks on its database, so an
 * exclusive lock is refused at once. Returns that refusal (SQLITE_BUSY or SQLITE_LOCKED), or undefined
 * when nobody holds the file; a process killed with kill -9 holds none, though it leaves -wal/-shm
 * files. Any other failure (not a database, unreadable) is thrown.
 */
export function lockConflict(file: string): Error & { code: string } | undefined {
  let db: Database.Database | undefined;
  try {
    db = new Database(file, { fileMustExist: true, timeout: 0 });
    db.pragma('locking_mode = EXCLUSIVE');
    db.exec('BEGIN EXCLUSIVE');
    db.exec('ROLLBACK');
    return undefined;
  } catch (err) {
    const code = (err as { code?: string }).code ?? '';
    if (isLockedOut(code)) return err as Error & { code: string };
    throw err;
  } finally {
    db?.close();
  }
}

// How long taking the instance lock waits for a holder that is about to let go (one stopping).
const INSTANCE_LOCK_WAIT_MS = 300;

/**
 * Holds `<database>-lock` until release(): one connection keeps that small SQLite file locked
 * EXCLUSIVE, and the kernel drops the lock when the process ends, however it ends (kill -9 too).
 * Taking it is atomic, so of two workers starting on one database at the same instant exactly one
 * runs, where assertNotInUse alone (probe, then open) let both through its window, and did not look
 * at a database not created yet. kvctl restore takes it too. Throws inUse(code) if it is held.
 */
export function holdInstanceLock(dbFile: string, inUse: (code: string) => string): { release(): void } {
  const lock = new Database(`${dbFile}-lock`, { timeout: INSTANCE_LOCK_WAIT_MS });
  try {
    // A transaction left open holds its EXCLUSIVE lock until the connection closes. Nothing is
    // written, so the file stays empty: no write a crash could tear, no journal beside it.
    lock.pragma('journal_mode = MEMORY');
    lock.exec('BEGIN EXCLUSIVE');
  } catch (err) {
    lock.close();
    const code = (err as { code?: string }).code ?? '';
    if (isLockedOut(code)) throw new Error(inUse(code), { cause: err });
    throw new Error(`cannot take the lock file ${dbFile}-lock: ${(err as Error).message}`, { cause: err });
  }
  // The caller keeps this: a garbage-collected connection is closed, and the lock with it.
  return { release: () => lock.close() };
}

/**
 * Refuses a database file that another process has open: two workers on one file (a second npm start
 * on the same --data-dir, a second worker with the same --name) would serve the same keys as two
 * stores, each with membership state naming the other's addresses. `kvctl restore` tells a running
 * store the same way. Other errors are left to the Store's own open, which explains them.
 */
export function assertNotInUse(file: string, inUse: (code: string) => string): void {
  if (!existsSync(file) || statSync(file).size === 0) return;
  let conflict: ReturnType<typeof lockConflict>;
  try {
    conflict = lockConflict(file);
  } catch {
    return;
  }
  if (conflict) throw new Error(inUse(conflict.code), { cause: conflict });
}

export class StoreError extends Error {
  constructor(
    readonly code: number,
    message: string,
  ) {
    super(message);
  }
}

function result(id: number, code: number, found: boolean, value: string, message = ''): OpResult {
  return { id, code, found, value, message, tombstone: false };
}

/** Maps an SQLite failure to the gRPC status a client should see. */
export function sqliteErrorCode(err: unknown): number {
  const code = (err as { code?: string }).code ?? '';
  if (code === 'SQLITE_FULL') return status.RESOURCE_EXHAUSTED;
  if (isLockedOut(code)) return status.UNAVAILABLE;
  return status.INTERNAL;
}

/** How the membership says an op on a key may be applied (see worker/membership.ts). */
export const Placed = {
  /** This worker owns the key and it is not moving. */
  Owned: 0,
  /** A migration moves the key onto or off this worker: tombstones apply. */
  Moving: 1,
} as const;
export type Placed = (typeof Placed)[keyof typeof Placed];

export interface OpCheck {
  /** Placed, or a refusal message (the op fails with FAILED_PRECONDITION). */
  (op: Op): Placed | string;
}

const ALWAYS_OWNED: OpCheck = () => Placed.Owned;

export class Store {
  readonly db: Database.Database;
  private keyCount: number;
  private readonly getStmt: Database.Statement<[string], string>;
  private readonly putStmt: Database.Statement<[string, string]>;
  private readonly delStmt: Database.Statement<[string]>;
  private readonly scanStmt: Database.Statement<[string, number], string>;
  private readonly scanEntriesStmt: Database.Statement<[string, number], { key: string; value: string }>;
  private readonly tombGetStmt: Database.Statement<[string], number>;
  private readonly tombPutStmt: Database.Statement<[string]>;
  private readonly tombDelStmt: Database.Statement<[string]>;
  private readonly tombScanStmt: Database.Statement<[string, number], string>;
  private readonly metaGetStmt: Database.Statement<[string], string>;
  private readonly metaPutStmt: Database.Statement<[string, string]>;
  private readonly applyAll: (ops: Op[], check: OpCheck) => OpResult[];
  onSqliteError: (err: unknown) => void = () => {};
  /** Told each point operation's kind and duration when set (metrics); unset costs one branch per op. */
  onOp: ((type: number, seconds: number) => void) | undefined;

  constructor(
    readonly file: string,
    options: StoreOptions,
  ) {
    checkExistingFile(file);
    this.db = new Database(file);
    try {
      // Reading the schema forces SQLite to parse the header: a damaged file fails here, before any write.
      this.db.pragma('schema_version');
      // Counting visits every leaf page of the table, so damaged data pages are found here, before the
      // first write (the CREATE TABLEs below would change a damaged file), with a message naming the
      // file rather than as INTERNAL errors on the keys they hold.
      const hasTable = this.db.prepare("SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name = 'kv'").pluck().get() === 1;
      this.keyCount = hasTable ? ((this.db.prepare('SELECT count(*) FROM kv').pluck().get() as number) ?? 0) : 0;
      this.db.pragma('journal_mode = WAL');
      this.db.pragma(`synchronous = ${options.sync === 'full' ? 'FULL' : 'NORMAL'}`);
      this.db.pragma('busy_timeout = 5000');
      if (options.maxPages) this.db.pragma(`max_page_count = ${Math.floor(options.maxPages)}`);
      // TEXT with the default BINARY collation compares with memcmp: ORDER BY key is byte order, and
      // embedded NUL bytes are kept (better-sqlite3 binds strings with their length).
      this.db.exec('CREATE TABLE IF NOT EXISTS kv (key TEXT PRIMARY KEY NOT NULL, value TEXT NOT NULL) WITHOUT ROWID');
      // Keys deleted on their new owner while a migration runs; cleared when it completes.
      this.db.exec('CREATE TABLE IF NOT EXISTS tombstones (key TEXT PRIMARY KEY NOT NULL) WITHOUT ROWID');
      this.db.exec('CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY NOT NULL, value TEXT NOT NULL) WITHOUT ROWID');
    } catch (err) {
      this.db.close();
      throw new Error(`cannot open database ${file}: ${(err as Error).message} (restore it from a backup, or move it aside)`, { cause: err });
    }
    this.getStmt = this.db.prepare<[string], string>('SELECT value FROM kv WHERE key = ?').pluck();
    this.putStmt = this.db.prepare<[string, string]>(
      'INSERT INTO kv (key, value) VALUES (?, ?) ON CONFLICT (key) DO UPDATE SET value = excluded.value',
    );
    this.delStmt = this.db.prepare<[string]>('DELETE FROM kv WHERE key = ?');
    this.scanStmt = this.db.prepare<[string, number], string>('SELECT key FROM kv WHERE key > ? ORDER BY key LIMIT ?').pluck();
    this.scanEntriesStmt = this.db.prepare<[string, number], { key: string; value: string }>('SELECT key, value FROM kv WHERE key > ? ORDER BY key LIMIT ?');
    this.tombGetStmt = this.db.prepare<[string], number>('SELECT 1 FROM tombstones WHERE key = ?').pluck();
    this.tombPutStmt = this.db.prepare<[string]>('INSERT OR IGNORE INTO tombstones (key) VALUES (?)');
    this.tombDelStmt = this.db.prepare<[string]>('DELETE FROM tombstones WHERE key = ?');
    this.tombScanStmt = this.db.prepare<[string, number], string>('SELECT key FROM tombstones WHERE key > ? ORDER BY key LIMIT ?').pluck();
    this.metaGetStmt = this.db.prepare<[string], string>('SELECT value FROM meta WHERE name = ?').pluck();
    this.metaPutStmt = this.db.prepare<[string, string]>(
      'INSERT INTO meta (name, value) VALUES (?, ?) ON CONFLICT (name) DO UPDATE SET value = excluded.value',
    );
    this.applyAll = this.db.transaction((ops: Op[], check: OpCheck) => ops.map((op) => this.applyOne(op, check)));
  }

  get keys(): number {
    return this.keyCount;
  }

  private applyOne(op: Op, check: OpCheck): OpResult {
    if (!this.onOp) return this.applyOp(op, check);
    const start = performance.now();
    const r = this.applyOp(op, check);
    this.onOp(op.type, (performance.now() - start) / 1000);
    return r;
  }

  private applyOp(op: Op, check: OpCheck): OpResult {
    const placed = check(op);
    if (typeof placed === 'string') return result(op.id, status.FAILED_PRECONDITION, false, '', placed);
    const moving = placed === Placed.Moving;
    const old = this.getStmt.get(op.key);
    switch (op.type) {
      case OpType.GET: {
        if (old !== undefined) return result(op.id, status.OK, true, old);
        const tomb = moving && this.tombGetStmt.get(op.key) !== undefined;
        return { ...result(op.id, status.NOT_FOUND, false, ''), tombstone: tomb };
      }
      case OpType.PUT: {
        this.putStmt.run(op.key, op.value);
        if (old === undefined) this.keyCount++;
        const tomb = moving && this.tombDelStmt.run(op.key).changes > 0;
        return { ...result(op.id, status.OK, old !== undefined, old ?? ''), tombstone: tomb };
      }
      case OpType.DELETE:
        if (old !== undefined) {
          this.delStmt.run(op.key);
          this.keyCount--;
        }
        // The old owner may still hold a copy: the tombstone keeps the mover from bringing it back.
        if (moving) this.tombPutStmt.run(op.key);
        return result(op.id, status.OK, old !== undefined, old ?? '');
      case OpType.COPY:
        if (old === undefined && this.tombGetStmt.get(op.key) === undefined) {
          this.putStmt.run(op.key, op.value);
          this.keyCount++;
          return result(op.id, status.OK, false, '');
        }
        return result(op.id, status.OK, true, '');
      case OpType.DROP:
        if (old !== undefined) {
          this.delStmt.run(op.key);
          this.keyCount--;
        }
        return result(op.id, status.OK, old !== undefined, '');
      default:
        return result(op.id, status.INVALID_ARGUMENT, false, '', `unknown op type ${String(op.type)}`);
    }
  }

  /**
   * Applies a batch in one transaction. If the transaction fails (disk full, I/O error), it was rolled
   * back whole; each op is then retried alone so one bad write cannot fail its neighbours.
   */
  applyBatch(ops: Op[], check: OpCheck = ALWAYS_OWNED): OpResult[] {
    if (ops.length === 1 && ops[0].type === OpType.GET) return [this.applySafely(ops[0], check)];
    const before = this.keyCount;
    try {
      return this.applyAll(ops, check);
    } catch (err) {
      this.keyCount = before;
      this.onSqliteError(err);
      return ops.map((op) => this.applySafely(op, check));
    }
  }

  private applySafely(op: Op, check: OpCheck): OpResult {
    const before = this.keyCount;
    try {
      return op.type === OpType.GET ? this.applyOne(op, check) : this.db.transaction(() => this.applyOne(op, check))();
    } catch (err) {
      this.keyCount = before;
      this.onSqliteError(err);
      const code = sqliteErrorCode(err);
      const why = code === status.RESOURCE_EXHAUSTED ? 'storage is full' : 'storage error';
      return result(op.id, code, false, '', `${why}: ${(err as Error).message}`);
    }
  }

  get(key: string): string | undefined {
    return this.getStmt.get(key);
  }

  /** Up to `limit` keys strictly after `after`, ascending byte order. */
  scan(after: string, limit: number): string[] {
    return this.scanStmt.all(after, limit);
  }

  scanEntries(after: string, limit: number): { key: string; value: string }[] {
    return this.scanEntriesStmt.all(after, limit);
  }

  scanTombstones(after: string, limit: number): string[] {
    return this.tombScanStmt.all(after, limit);
  }

  tombstoneCount(): number {
    return this.db.prepare('SELECT count(*) FROM tombstones').pluck().get() as number;
  }

  getMeta(name: string): string | undefined {
    return this.metaGetStmt.get(name);
  }

  /** Stores a meta value, running `alsoInTx` in the same transaction. */
  setMeta(name: string, value: string, alsoInTx?: () => void): void {
    this.db.transaction(() => {
      this.metaPutStmt.run(name, value);
      alsoInTx?.();
    })();
  }

  clearTombstones(): void {
    this.db.prepare('DELETE FROM tombstones').run();
  }

  sizes(): { db: number; wal: number } {
    const size = (f: string): number => {
      try {
        return statSync(f).size;
      } catch {
        return 0;
      }
    };
    return { db: size(this.file), wal: size(`${this.file}-wal`) };
  }

  close(): void {
    if (!this.db.open) return;
    // Fold the WAL back so the file on disk is complete by itself after a clean stop.
    try {
      this.db.pragma('wal_checkpoint(TRUNCATE)');
    } finally {
      this.db.close();
    }
  }
}
