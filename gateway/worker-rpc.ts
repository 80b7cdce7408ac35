// Typed unary and streaming calls to a worker's control RPCs (point operations use the exchange socket).
import * as grpc from '@grpc/grpc-js';
import { KvError, statusName } from '../shared/errors.js';
import type { KeyChunk, MembershipReply, ScanRequest, SnapshotReply, StatusReply } from '../shared/proto.js';

type UnaryFn<Req, Res> = (req: Req, metadata: grpc.Metadata, opts: grpc.CallOptions, cb: grpc.requestCallback<Res>) => void;

/** `waitForReady`: wait (within the deadline) for a channel still reconnecting, instead of failing at once. */
function unary<Req, Res>(client: grpc.Client, worker: string, method: string, req: Req, timeoutMs: number, waitForReady = false): Promise<Res> {
  return new Promise((resolve, reject) => {
    const fn = (client as unknown as Record<string, UnaryFn<Req, Res>>)[method].bind(client);
    // grpc-js takes wait-for-ready from the call's metadata options.
    fn(req, new grpc.Metadata({ waitForReady }), { deadline: Date.now() + timeoutMs }, (err, res) => {
      if (err) reject(new KvError(transportCode(err.code), `worker ${worker}: ${method}: ${statusName(err.code)}: ${err.details}`));
      else resolve(res!);
    });
  });
}

/** A transport failure of a worker is UNAVAILABLE to clients unless it is a deadline or a refusal. */
function transportCode(code: number): number {
  return code === grpc.status.DEADLINE_EXCEEDED || code === grpc.status.FAILED_PRECONDITION || code === grpc.status.ABORTED ||
    code === grpc.status.INVALID_ARGUMENT || code === grpc.status.RESOURCE_EXHAUSTED
    ? code
    : grpc.status.UNAVAILABLE;
}

export const workerStatus = (c: grpc.Client, worker: string, timeoutMs: number): Promise<StatusReply> =>
  unary<object, StatusReply>(c, worker, 'Status', {}, timeoutMs);

export const getMembership = (c: grpc.Client, worker: string, timeoutMs: number, waitForReady = false): Promise<MembershipReply> =>
  unary<object, MembershipReply>(c, worker, 'GetMembership', {}, timeoutMs, waitForReady);

export const setMembership = (
  c: grpc.Client,
  worker: string,
  req: { expected_epoch: number; state_json: string; propagate: boolean },
  timeoutMs: number,
): Promise<MembershipReply> => unary(c, worker, 'SetMembership', req, timeoutMs);

/** The worker's part of backup `backupId`, refused unless the worker is at `epoch` with no migration running. */
export const snapshot = (c: grpc.Client, worker: string, backupId: string, epoch: number, timeoutMs: number): Promise<SnapshotReply> =>
  unary<{ backup_id: string; epoch: number }, SnapshotReply>(c, worker, 'Snapshot', { backup_id: backupId, epoch }, timeoutMs);

/**
 * Retention: the worker deletes its own snapshot files of every backup set older than `before`,
 * except sets younger than `minAgeMs` (they may still be being written).
 */
export const prune = (c: grpc.Client, worker: string, before: string, minAgeMs: number, timeoutMs: number): Promise<string[]> =>
  unary<{ before: string; min_age_ms: number }, { pruned: string[] }>(c, worker, 'Prune', { before, min_age_ms: minAgeMs }, timeoutMs).then((r) => r.pruned ?? []);

/** Streams a worker's keys (and, if asked, values and tombstones), chunk by chunk. */
export function scan(
  c: grpc.Client,
  worker: string,
  req: Partial<ScanRequest>,
  timeoutMs: number,
  onChunk: (chunk: KeyChunk) => void,
): Promise<void> {
  return new Promise((resolve, reject) => {
    const call = (c as unknown as {
      ScanKeys(r: Partial<ScanRequest>, o: grpc.CallOptions): grpc.ClientReadableStream<KeyChunk>;
    }).ScanKeys({ after: '', limit: 0, ...req }, { deadline: Date.now() + timeoutMs });
    call.on('data', onChunk);
    call.on('error', (err: grpc.ServiceError) => reject(new KvError(transportCode(err.code), `worker ${worker}: ${statusName(err.code)}: ${err.details}`)));
    call.on('end', () => resolve());
  });
}
