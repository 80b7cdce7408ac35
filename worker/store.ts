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

export class StoreError extends Error {
  constructor(
    readonly code: number,
    message: string,
  ) {
    super(message);
  }
}

/** Maps an SQLite failure to the gRPC status a client should see. */
export function sqliteErrorCode(err: unknown): number {
  const code = (err as { code?: string }).code ?? '';
  if (code === 'SQLITE_FULL') return status.RESOURCE_EXHAUSTED;
  if (code.startsWith('SQLITE_BUSY') || code.startsWith('SQLITE_LOCKED')) return status.UNAVAILABLE;
  return status.INTERNAL;
}

export class Store {
  readonly db: Database.Database;
  private keyCount: number;
  private readonly getStmt: Database.Statement<[string], string>;
  private readonly putStmt: Database.Statement<[string, string]>;
  private readonly delStmt: Database.Statement<[string]>;
  private readonly scanStmt: Database.Statement<[string, number], string>;
  private readonly applyAll: (ops: Op[]) => OpResult[];
  onSqliteError: (err: unknown) => void = () => {};

  constructor(
    readonly file: string,
    options: StoreOptions,
  ) {
    checkExistingFile(file);
    this.db = new Database(file);
    try {
      // Reading the schema forces SQLite to parse the header: a damaged file fails here, before any write.
      this.db.pragma('schema_version');
      this.db.pragma('journal_mode = WAL');
      this.db.pragma(`synchronous = ${options.sync === 'full' ? 'FULL' : 'NORMAL'}`);
      this.db.pragma('busy_timeout = 5000');
      if (options.maxPages) this.db.pragma(`max_page_count = ${Math.floor(options.maxPages)}`);
      // TEXT with the default BINARY collation compares with memcmp: ORDER BY key is byte order, and
      // embedded NUL bytes are kept (better-sqlite3 binds strings with their length).
      this.db.exec('CREATE TABLE IF NOT EXISTS kv (key TEXT PRIMARY KEY NOT NULL, value TEXT NOT NULL) WITHOUT ROWID');
    } catch (err) {
      this.db.close();
      throw new Error(`cannot open database ${file}: ${(err as Error).message}`, { cause: err });
    }
    this.getStmt = this.db.prepare<[string], string>('SELECT value FROM kv WHERE key = ?').pluck();
    this.putStmt = this.db.prepare<[string, string]>(
      'INSERT INTO kv (key, value) VALUES (?, ?) ON CONFLICT (key) DO UPDATE SET value = excluded.value',
    );
    this.delStmt = this.db.prepare<[string]>('DELETE FROM kv WHERE key = ?');
    this.scanStmt = this.db.prepare<[string, number], string>('SELECT key FROM kv WHERE key > ? ORDER BY key LIMIT ?').pluck();
    this.keyCount = (this.db.prepare('SELECT count(*) FROM kv').pluck().get() as number) ?? 0;
    this.applyAll = this.db.transaction((ops: Op[]) => ops.map((op) => this.applyOne(op)));
  }

  get keys(): number {
    return this.keyCount;
  }

  private applyOne(op: Op): OpResult {
    const old = this.getStmt.get(op.key);
    if (op.type === OpType.GET) {
      return old === undefined
        ? { id: op.id, code: status.NOT_FOUND, found: false, value: '', message: '' }
        : { id: op.id, code: status.OK, found: true, value: old, message: '' };
    }
    if (op.type === OpType.PUT) {
      this.putStmt.run(op.key, op.value);
      if (old === undefined) this.keyCount++;
    } else if (op.type === OpType.DELETE) {
      if (old !== undefined) {
        this.delStmt.run(op.key);
        this.keyCount--;
      }
    } else {
      return { id: op.id, code: status.INVALID_ARGUMENT, found: false, value: '', message: `unknown op type ${String(op.type)}` };
    }
    return { id: op.id, code: status.OK, found: old !== undefined, value: old ?? '', message: '' };
  }

  /**
   * Applies a batch in one transaction. If the transaction fails (disk full, I/O error), it was rolled
   * back whole; each op is then retried alone so one bad write cannot fail its neighbours.
   */
  applyBatch(ops: Op[]): OpResult[] {
    if (ops.length === 1 && ops[0].type === OpType.GET) return [this.applySafely(ops[0])];
    const before = this.keyCount;
    try {
      return this.applyAll(ops);
    } catch (err) {
      this.keyCount = before;
      this.onSqliteError(err);
      return ops.map((op) => this.applySafely(op));
    }
  }

  private applySafely(op: Op): OpResult {
    const before = this.keyCount;
    try {
      return op.type === OpType.GET ? this.applyOne(op) : this.db.transaction(() => this.applyOne(op))();
    } catch (err) {
      this.keyCount = before;
      this.onSqliteError(err);
      const code = sqliteErrorCode(err);
      const why = code === status.RESOURCE_EXHAUSTED ? 'storage is full' : 'storage error';
      return { id: op.id, code, found: false, value: '', message: `${why}: ${(err as Error).message}` };
    }
  }

  get(key: string): string | undefined {
    return this.getStmt.get(key);
  }

  /** Up to `limit` keys strictly after `after`, ascending byte order. */
  scan(after: string, limit: number): string[] {
    return this.scanStmt.all(after, limit);
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
