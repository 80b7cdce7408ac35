// The exchange's binary layout (shared/exchange-codec.ts): what the gateway encodes, the worker decodes
// unchanged, and back; a stream cut at any byte still yields the same frames; a malformed frame is
// refused with FrameError rather than read as something else.
import { describe, expect, it } from 'vitest';
import { FrameError, FrameKind, FrameReader, MAX_FRAME_BYTES, decodeOps, decodeResults, encodeOps, encodeResults, encodeSignal } from '../shared/exchange-codec.js';
import { OpType, type Op, type OpResult } from '../shared/proto.js';

const ops: Op[] = [
  { id: 1, type: OpType.GET, key: 'a', value: '' },
  { id: 0xffffffff, type: OpType.PUT, key: 'k'.repeat(128), value: 'v'.repeat(2048) },
  { id: 7, type: OpType.DELETE, key: 'nul\0inside', value: '' },
  { id: 8, type: OpType.COPY, key: 'unicode-é-€-😀', value: 'välue 😀' },
  { id: 9, type: OpType.DROP, key: ' ', value: '' },
];
const results: OpResult[] = [
  { id: 1, code: 0, found: true, value: 'x'.repeat(2048), message: '', tombstone: false },
  { id: 2, code: 5, found: false, value: '', message: '', tombstone: true },
  { id: 3, code: 9, found: false, value: '', message: 'stale membership epoch 3: worker worker-0 is at epoch 4', tombstone: false },
  { id: 4, code: 13, found: true, value: 'é', message: 'ü', tombstone: true },
];

/** Every frame a reader yields for `bytes` pushed in pieces of `step` bytes. */
function frames(bytes: Buffer, step: number): { kind: number; body: Buffer }[] {
  const out: { kind: number; body: Buffer }[] = [];
  const reader = new FrameReader((kind, buf, start, end) => out.push({ kind, body: Buffer.from(buf.subarray(start, end)) }));
  for (let i = 0; i < bytes.length; i += step) reader.push(bytes.subarray(i, i + step));
  expect(reader.buffered).toBe(0);
  return out;
}

describe('exchange codec', () => {
  it('round-trips ops and results, epochs and every field, including non-ASCII and NUL', () => {
    const o = encodeOps(123456789, ops);
    expect(o.readUInt32LE(0)).toBe(o.length - 4);
    expect(o[4]).toBe(FrameKind.OPS);
    expect(decodeOps(o, 5, o.length)).toEqual({ epoch: 123456789, ops });
    const r = encodeResults(42, results);
    expect(r[4]).toBe(FrameKind.RESULTS);
    expect(decodeResults(r, 5, r.length)).toEqual({ epoch: 42, results });
    expect(decodeOps(encodeOps(0, []), 5, 17)).toEqual({ epoch: 0, ops: [] });
  });

  it('cuts an error message longer than 64 KiB instead of failing the batch', () => {
    const r = encodeResults(1, [{ ...results[2], message: 'm'.repeat(100_000) }]);
    expect(decodeResults(r, 5, r.length).results[0].message).toBe('m'.repeat(0xffff));
  });

  it('yields the same frames however the stream is cut', () => {
    const stream = Buffer.concat([encodeOps(5, ops), encodeSignal(FrameKind.PING), encodeResults(6, results), encodeSignal(FrameKind.PONG)]);
    const whole = frames(stream, stream.length);
    expect(whole.map((f) => f.kind)).toEqual([FrameKind.OPS, FrameKind.PING, FrameKind.RESULTS, FrameKind.PONG]);
    expect(decodeOps(whole[0].body, 0, whole[0].body.length).ops).toEqual(ops);
    for (const step of [1, 2, 3, 5, 7, 64, 1000]) expect(frames(stream, step)).toEqual(whole);
  });

  it('refuses a frame over the size limit, or of length 0, before buffering it', () => {
    const header = Buffer.alloc(5);
    header.writeUInt32LE(MAX_FRAME_BYTES + 1, 0);
    expect(() => new FrameReader(() => {}).push(header)).toThrow(FrameError);
    expect(() => new FrameReader(() => {}).push(Buffer.alloc(4))).toThrow(/frame of 0 bytes/);
  });

  it('refuses bodies that do not parse: truncated, lengths past the end, trailing bytes', () => {
    const o = encodeOps(1, ops);
    expect(() => decodeOps(o, 5, 10)).toThrow(FrameError);
    expect(() => decodeOps(o, 5, o.length - 1)).toThrow(/runs past the end/);
    const longer = Buffer.concat([o, Buffer.from([0])]);
    expect(() => decodeOps(longer, 5, longer.length)).toThrow(/1 bytes after the last op/);
    const lying = Buffer.from(o);
    lying.writeUInt32LE(1000, 13); // claims 1000 ops
    expect(() => decodeOps(lying, 5, lying.length)).toThrow(FrameError);
    lying.writeUInt32LE(0xffffffff, 13); // refused before allocating room for them
    expect(() => decodeOps(lying, 5, lying.length)).toThrow(/claims 4294967295 ops/);
    const r = encodeResults(1, results);
    expect(() => decodeResults(r, 5, r.length - 3)).toThrow(FrameError);
  });
});
