// The gateway<->worker data path on the wire: the Exchange messages of proto/worker.proto (OpBatch,
// ResultBatch) in a fixed binary layout, framed on a plain (or TLS) socket on the worker's gRPC port.
//
// Why not the gRPC Exchange stream: measured on this 2-core machine at the benchmark's batch size
// (8 ops a batch, 3 batches in flight), a batch cost the worker 137 µs of CPU over the grpc-js stream and
// 45 µs framed on a socket, and the gateway 106 µs against 34 µs; encoding the same frames with
// protobufjs instead of this layout cost another ~2 µs per op on each side. Through the gateway, the
// grpc-js stream made the internal hop cost more than serving the client's call (docs/performance.md).
//
// A connection opens with the 4-byte MAGIC, by which the worker tells it from an HTTP/2 preface
// ("PRI ..."), also over TLS (where the gateway asks for EXCHANGE_ALPN). Then frames, both ways:
//   u32 LE length of the rest | u8 kind | body
// OPS      f64 epoch | u32 count | count × (u32 id | u8 type | u16 key bytes | u32 value bytes | key | value)
// RESULTS  f64 epoch | u32 count | count × (u32 id | u16 code | u8 flags | u32 value bytes | u16 message bytes | value | message)
//          flags: 1 = found, 2 = tombstone
// PING / PONG  no body: the gateway's keepalive (a hung worker is noticed even when idle).
// Strings are UTF-8. A frame longer than MAX_FRAME_BYTES, an unknown kind or a body that does not
// parse closes the connection: the peer is not speaking this protocol.
import type { Op, OpBatch, OpResult, ResultBatch } from './proto.js';
import { INTERNAL_MAX_MESSAGE_BYTES } from './grpc-options.js';

export const MAGIC = Buffer.from('KVX1', 'latin1');
/** ALPN protocol name of the framed exchange over TLS (gRPC negotiates "h2" on the same port). */
export const EXCHANGE_ALPN = 'kvstore-exchange/1';
export const MAX_FRAME_BYTES = INTERNAL_MAX_MESSAGE_BYTES;

export const FrameKind = { OPS: 1, RESULTS: 2, PING: 3, PONG: 4 } as const;

/** The gateway pings each worker connection this often, busy or idle. */
export const KEEPALIVE_MS = 10_000;
/**
 * A worker closes a gateway connection that has sent nothing, not even a ping, for this long: its
 * gateway is gone without a FIN (a host that vanished), and an idle socket would otherwise be held
 * open forever, since TCP only gives up on data it is trying to send.
 */
export const PEER_SILENT_MS = 6 * KEEPALIVE_MS;

const MAX_MESSAGE_BYTES = 0xffff;
const OP_HEADER = 11;
const RESULT_HEADER = 13;
const BATCH_HEADER = 4 + 1 + 8 + 4;

export class FrameError extends Error {}

const utf8 = (s: string): number => Buffer.byteLength(s, 'utf8');

/** Throws FrameError for a key the layout cannot carry (the gateway's validation allows 128 bytes). */
export function encodeOps(epoch: number, ops: readonly Op[]): Buffer {
  // Exact sizes: sized for the worst case (3 bytes a UTF-16 unit), 8 reads of 2 KiB values took a
  // 49 KB buffer to send 16.5 KB, kept alive whole by the write queue.
  let size = BATCH_HEADER;
  for (const op of ops) {
    const k = utf8(op.key);
    if (k > 0xffff) throw new FrameError(`key of ${k} bytes (op ${op.id}) is longer than the exchange carries (65535)`);
    size += OP_HEADER + k + utf8(op.value);
  }
  const b = Buffer.allocUnsafe(size);
  b[4] = FrameKind.OPS;
  b.writeDoubleLE(epoch, 5);
  b.writeUInt32LE(ops.length, 13);
  let p = BATCH_HEADER;
  for (const op of ops) {
    b.writeUInt32LE(op.id, p);
    b[p + 4] = op.type;
    const k = b.write(op.key, p + OP_HEADER, 'utf8');
    const v = b.write(op.value, p + OP_HEADER + k, 'utf8');
    b.writeUInt16LE(k, p + 5);
    b.writeUInt32LE(v, p + 7);
    p += OP_HEADER + k + v;
  }
  b.writeUInt32LE(p - 4, 0);
  return b;
}

export function encodeResults(epoch: number, results: readonly OpResult[]): Buffer {
  let size = BATCH_HEADER;
  for (const r of results) size += RESULT_HEADER + utf8(r.value) + Math.min(r.message ? utf8(r.message) : 0, MAX_MESSAGE_BYTES);
  const b = Buffer.allocUnsafe(size);
  b[4] = FrameKind.RESULTS;
  b.writeDoubleLE(epoch, 5);
  b.writeUInt32LE(results.length, 13);
  let p = BATCH_HEADER;
  for (const r of results) {
    b.writeUInt32LE(r.id, p);
    b.writeUInt16LE(r.code, p + 4);
    b[p + 6] = (r.found ? 1 : 0) | (r.tombstone ? 2 : 0);
    const v = b.write(r.value, p + RESULT_HEADER, 'utf8');
    // Error messages are for people; one longer than 64 KiB is cut rather than failing the batch.
    const m = r.message ? b.write(r.message, p + RESULT_HEADER + v, Math.min(utf8(r.message), MAX_MESSAGE_BYTES), 'utf8') : 0;
    b.writeUInt32LE(v, p + 7);
    b.writeUInt16LE(m, p + 11);
    p += RESULT_HEADER + v + m;
  }
  b.writeUInt32LE(p - 4, 0);
  return b.subarray(0, p);
}

export function encodeSignal(kind: typeof FrameKind.PING | typeof FrameKind.PONG): Buffer {
  const b = Buffer.allocUnsafe(5);
  b.writeUInt32LE(1, 0);
  b[4] = kind;
  return b;
}

function need(end: number, limit: number, what: string): void {
  if (end > limit) throw new FrameError(`${what} runs past the end of its frame`);
}

/** `start`/`end` bound the body (after the kind byte). */
export function decodeOps(b: Buffer, start: number, end: number): OpBatch {
  need(start + 12, end, 'batch header');
  const epoch = b.readDoubleLE(start);
  const n = b.readUInt32LE(start + 8);
  if (n * OP_HEADER > end - start - 12) throw new FrameError(`batch claims ${n} ops, more than its ${end - start} bytes can hold`);
  const ops: Op[] = new Array(n);
  let p = start + 12;
  for (let i = 0; i < n; i++) {
    need(p + OP_HEADER, end, `op ${i}`);
    const k = b.readUInt16LE(p + 5);
    const v = b.readUInt32LE(p + 7);
    const keyAt = p + OP_HEADER;
    need(keyAt + k + v, end, `op ${i}`);
    ops[i] = { id: b.readUInt32LE(p), type: b[p + 4] as Op['type'], key: b.toString('utf8', keyAt, keyAt + k), value: b.toString('utf8', keyAt + k, keyAt + k + v) };
    p = keyAt + k + v;
  }
  if (p !== end) throw new FrameError(`${end - p} bytes after the last op`);
  return { epoch, ops };
}

export function decodeResults(b: Buffer, start: number, end: number): ResultBatch {
  need(start + 12, end, 'batch header');
  const epoch = b.readDoubleLE(start);
  const n = b.readUInt32LE(start + 8);
  if (n * RESULT_HEADER > end - start - 12) throw new FrameError(`batch claims ${n} results, more than its ${end - start} bytes can hold`);
  const results: OpResult[] = new Array(n);
  let p = start + 12;
  for (let i = 0; i < n; i++) {
    need(p + RESULT_HEADER, end, `result ${i}`);
    const flags = b[p + 6];
    const v = b.readUInt32LE(p + 7);
    const m = b.readUInt16LE(p + 11);
    const at = p + RESULT_HEADER;
    need(at + v + m, end, `result ${i}`);
    results[i] = {
      id: b.readUInt32LE(p),
      code: b.readUInt16LE(p + 4),
      found: (flags & 1) !== 0,
      value: b.toString('utf8', at, at + v),
      message: m > 0 ? b.toString('utf8', at + v, at + v + m) : '',
      tombstone: (flags & 2) !== 0,
    };
    p = at + v + m;
  }
  if (p !== end) throw new FrameError(`${end - p} bytes after the last result`);
  return { epoch, results };
}

/**
 * Cuts a byte stream into frames. A chunk holding whole frames (the usual case: one batch per socket
 * write) is read in place; the pieces of a frame split across chunks are joined once, when complete.
 */
export class FrameReader {
  private pieces: Buffer[] = [];
  private held = 0;
  /** Bytes the held pieces must reach before a frame can be read from them. */
  private wanted = 4;

  constructor(private readonly onFrame: (kind: number, buf: Buffer, start: number, end: number) => void) {}

  push(chunk: Buffer): void {
    let buf = chunk;
    if (this.held > 0) {
      this.pieces.push(chunk);
      this.held += chunk.length;
      if (this.held < this.wanted) return;
      buf = Buffer.concat(this.pieces, this.held);
      this.pieces = [];
      this.held = 0;
    }
    let p = 0;
    this.wanted = 4;
    while (buf.length - p >= 4) {
      const len = buf.readUInt32LE(p);
      if (len < 1 || len > MAX_FRAME_BYTES) throw new FrameError(`frame of ${len} bytes (limit ${MAX_FRAME_BYTES})`);
      if (buf.length - p - 4 < len) {
        this.wanted = 4 + len;
        break;
      }
      this.onFrame(buf[p + 4], buf, p + 5, p + 4 + len);
      p += 4 + len;
    }
    if (p < buf.length) {
      this.pieces.push(p === 0 ? buf : buf.subarray(p));
      this.held = buf.length - p;
    }
  }

  /** Bytes held for a frame not yet complete. */
  get buffered(): number {
    return this.held;
  }
}
