// The internal Worker service: the gateway's exchange of point operations, key scans, snapshots, status.
import type { Socket } from 'node:net';
import * as grpc from '@grpc/grpc-js';
import type { Counter } from 'prom-client';
import { toServiceError } from '../shared/errors.js';
import type { Logger } from '../shared/logger.js';
import type { KeyChunk, MembershipReply, Op, OpBatch, OpResult, ResultBatch, ScanRequest, SnapshotReply, StatusReply } from '../shared/proto.js';
import { serveExchangeSocket, type ExchangeConnection } from './exchange-socket.js';
import type { WorkerMembership } from './membership.js';
import type { WorkerMetrics } from './metrics.js';
import { SnapshotRefused, type Snapshotter } from './snapshot.js';
import type { Store } from './store.js';

const OP_NAMES = ['get', 'put', 'delete', 'copy', 'drop'];
const SCAN_CHUNK = 5000;


export class WorkerService {
  private readonly sockets = new Set<ExchangeConnection>();
  private readonly opCounters = new Map<number, Counter.Internal>();
  private readonly batchTimer;
  private draining = false;

  constructor(
    private readonly name: string,
    private readonly store: Store,
    private readonly snapshots: Snapshotter,
    private readonly metrics: WorkerMetrics,
    private readonly log: Logger,
    private readonly membership: WorkerMembership,
    /** false (KV_METRICS=off): skip the per-batch histogram and per-op counters on the hot path. */
    private readonly metricsOn = true,
  ) {
    this.batchTimer = metrics.batchDuration;
  }

  implementation(): grpc.UntypedServiceImplementation {
    return {
      ScanKeys: (call: grpc.ServerWritableStream<ScanRequest, KeyChunk>) => void this.scanKeys(call),
      Snapshot: (call: grpc.ServerUnaryCall<{ backup_id: string; epoch: number }, SnapshotReply>, cb: grpc.sendUnaryData<SnapshotReply>) =>
        void this.snapshot(call.request.backup_id, call.request.epoch ?? 0, cb),
      Prune: (call: grpc.ServerUnaryCall<{ before: string; min_age_ms: number }, { pruned: string[] }>, cb: grpc.sendUnaryData<{ pruned: string[] }>) =>
        void this.snapshots.prune(call.request.before, call.request.min_age_ms ?? 0).then(
          (pruned) => {
            if (pruned.length > 0) this.log.info({ pruned }, 'old snapshots deleted');
            cb(null, { pruned });
          },
          (err: unknown) => {
            this.log.error({ err }, 'prune failed');
            cb(toServiceError(err, this.log));
          },
        ),
      Status: (_call: grpc.ServerUnaryCall<object, StatusReply>, cb: grpc.sendUnaryData<StatusReply>) => {
        const sizes = this.store.sizes();
        cb(null, {
          worker: this.name,
          keys: this.store.keys,
          db_bytes: sizes.db,
          wal_bytes: sizes.wal,
          epoch: this.membership.epoch,
          member: this.membership.isMember,
          tombstones: this.store.tombstoneCount(),
        });
      },
      GetMembership: (_call: grpc.ServerUnaryCall<object, MembershipReply>, cb: grpc.sendUnaryData<MembershipReply>) =>
        cb(null, this.membership.reply(true)),
      SetMembership: (
        call: grpc.ServerUnaryCall<{ expected_epoch: number; state_json: string; propagate: boolean }, MembershipReply>,
        cb: grpc.sendUnaryData<MembershipReply>,
      ) => {
        try {
          const before = this.membership.epoch;
          const r = call.request;
          const reply = this.membership.set(r.expected_epoch, r.state_json, r.propagate);
          if (reply.applied && reply.epoch !== before) this.log.info({ from: before, to: reply.epoch, state: reply.state_json }, 'membership changed');
          cb(null, reply);
        } catch (err) {
          this.log.error({ err }, 'membership update refused');
          cb({ code: grpc.status.INVALID_ARGUMENT, details: (err as Error).message });
        }
      },
    };
  }

  /** One batch's duration and its ops by kind and code (also used by the direct API). */
  recordBatch(ops: Op[], results: OpResult[], seconds: number): void {
    this.batchTimer.observe(seconds);
    for (let i = 0; i < ops.length; i++) this.countOp(ops[i].type, results[i].code);
  }

  private countOp(type: number, code: number): void {
    const k = type * 32 + code;
    let c = this.opCounters.get(k);
    if (!c) {
      c = this.metrics.ops.labels(OP_NAMES[type] ?? 'unknown', grpc.status[code] ?? String(code));
      this.opCounters.set(k, c);
    }
    c.inc();
  }

  /**
   * One batch of point operations from a gateway's exchange socket: refused whole if routed with
   * another membership epoch, else applied as one transaction.
   */
  applyBatch(batch: OpBatch): ResultBatch {
    const membership = this.membership;
    const refused = membership.checkEpoch(batch.epoch);
    if (refused) {
      const code = grpc.status.FAILED_PRECONDITION;
      return { epoch: membership.epoch, results: batch.ops.map((op) => ({ id: op.id, code, found: false, value: '', message: refused, tombstone: false })) };
    }
    if (!this.metricsOn) return { epoch: membership.epoch, results: this.store.applyBatch(batch.ops, membership.check) };
    const start = performance.now();
    const results = this.store.applyBatch(batch.ops, membership.check);
    this.recordBatch(batch.ops, results, (performance.now() - start) / 1000);
    return { epoch: membership.epoch, results };
  }

  /** A gateway's framed exchange connection (worker/listener.ts told it from gRPC). */
  serveSocket(socket: Socket, head: Buffer): void {
    if (this.draining) {
      socket.destroy();
      return;
    }
    const conn = serveExchangeSocket(socket, head, (batch) => this.applyBatch(batch), this.log, () => this.sockets.delete(conn));
    this.sockets.add(conn);
  }

  private async scanKeys(call: grpc.ServerWritableStream<ScanRequest, KeyChunk>): Promise<void> {
    // Keyset pagination in chunks on the main thread: each chunk is a few ms, and yielding between
    // chunks keeps point operations flowing during a large listing.
    const req = call.request;
    const refused = this.membership.checkEpoch(req.epoch ?? 0);
    if (refused) {
      call.emit('error', { code: grpc.status.FAILED_PRECONDITION, details: refused });
      return;
    }
    let after = req.after ?? '';
    let remaining = req.limit > 0 ? req.limit : Number.POSITIVE_INFINITY;
    try {
      // `limit` counts keys returned, not rows read: with moving_only, a window of rows may hold no
      // leaving key at all, and stopping there would tell the mover this worker has nothing left.
      while (remaining > 0 && !call.cancelled) {
        const want = req.moving_only ? SCAN_CHUNK : Math.min(SCAN_CHUNK, remaining);
        let keys: string[];
        let values: string[] = [];
        let last: string | undefined;
        let exhausted: boolean;
        if (req.with_values || req.moving_only) {
          const rows = this.store.scanEntries(after, want);
          exhausted = rows.length < want;
          last = rows.at(-1)?.key;
          let kept = req.moving_only ? rows.filter((r) => this.membership.isLeaving(r.key)) : rows;
          if (kept.length > remaining) {
            // Resume right after the last key returned.
            kept = kept.slice(0, remaining);
            last = kept[kept.length - 1].key;
            exhausted = false;
          }
          keys = kept.map((r) => r.key);
          if (req.with_values) values = kept.map((r) => r.value);
        } else {
          keys = this.store.scan(after, want);
          exhausted = keys.length < want;
          last = keys.at(-1);
        }
        remaining -= keys.length;
        if (keys.length > 0 && !call.write({ keys, values, tombstones: [] })) await new Promise((resolve) => call.once('drain', resolve));
        else await new Promise((resolve) => setImmediate(resolve));
        if (exhausted || last === undefined) break;
        after = last;
      }
      if (req.with_tombstones) {
        let t = '';
        for (;;) {
          const tombstones = this.store.scanTombstones(t, SCAN_CHUNK);
          if (tombstones.length === 0) break;
          t = tombstones[tombstones.length - 1];
          call.write({ keys: [], values: [], tombstones });
          if (tombstones.length < SCAN_CHUNK) break;
        }
      }
      call.end();
    } catch (err) {
      this.log.error({ err }, 'key scan failed');
      call.emit('error', toServiceError(err, this.log));
    }
  }

  /**
   * Why a snapshot for a backup of `epoch` may not be taken or kept now, if it may not. A set must be
   * of one ring with no keys in flight: during a migration an old owner has dropped keys the new owner
   * holds, and a new owner may not be in the set at all. Epochs only grow, so the same stable epoch
   * before and after the snapshot means none began in between. 0 comes from older gateways: unchecked.
   */
  private snapshotRefusal(epoch: number): string | undefined {
    if (epoch === 0) return undefined;
    const m = this.membership;
    if (m.epoch !== epoch) return `worker ${this.name} is at membership epoch ${m.epoch}, not the backup's ${epoch}; the membership changed, back up again`;
    if (m.state?.previous) return `worker ${this.name}: keys are moving between workers (epoch ${epoch}); back up after the migration completes`;
    return undefined;
  }

  private async snapshot(backupId: string, epoch: number, cb: grpc.sendUnaryData<SnapshotReply>): Promise<void> {
    const m = this.metrics;
    const started = Date.now();
    let outcome: 'success' | 'failure' | 'refused' = 'failure';
    // A refusal is not a failed backup of this worker: its last good snapshot stays good, and the
    // KvBackupFailed alert (last_backup_success == 0) must not fire for a duplicate id or a migration.
    let refusal = this.snapshotRefusal(epoch);
    try {
      if (refusal) throw new SnapshotRefused(grpc.status.FAILED_PRECONDITION, refusal);
      const r = await this.snapshots.take(backupId);
      refusal = this.snapshotRefusal(epoch);
      if (refusal) {
        await this.snapshots.discard(backupId);
        throw new SnapshotRefused(grpc.status.FAILED_PRECONDITION, `${refusal} (it changed while the snapshot was taken, which was discarded)`);
      }
      outcome = 'success';
      m.backupSuccess.set(1);
      m.backupBytes.set(r.bytes);
      m.lastSuccess.set(Date.now() / 1000);
      this.log.info({ backupId, file: r.file, keys: r.keys, bytes: r.bytes, seconds: r.seconds }, 'snapshot written');
      cb(null, { worker: this.name, ...r });
    } catch (err) {
      // `refusal` also covers a discard that failed after the membership changed.
      if (err instanceof SnapshotRefused || refusal !== undefined) {
        outcome = 'refused';
        this.log.warn({ backupId, err: (err as Error).message }, 'snapshot refused');
      } else {
        m.backupSuccess.set(0);
        this.log.error({ err, backupId }, 'snapshot failed');
      }
      cb(toServiceError(err, this.log));
    } finally {
      if (outcome !== 'refused') {
        m.backupTimestamp.set(Date.now() / 1000);
        m.backupDuration.set((Date.now() - started) / 1000);
        m.backupSeconds.labels(outcome).observe((Date.now() - started) / 1000);
      }
      m.backups.labels(outcome).inc();
    }
  }

  /**
   * Ends every exchange so the gateways fail their pending calls and tryShutdown can finish. Resolves
   * when every exchange socket has closed, its answers sent, or been cut off after graceMs.
   */
  async drain(graceMs: number): Promise<void> {
    this.draining = true;
    const closing = [...this.sockets].map((conn) => conn.end(graceMs));
    this.sockets.clear();
    const cutOff = (await Promise.all(closing)).filter((flushed) => !flushed).length;
    if (cutOff > 0) this.log.warn({ connections: cutOff, graceMs }, 'exchange connections cut off: their gateways did not read the answers within the shutdown grace');
  }
}
