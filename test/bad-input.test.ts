// Bad input over the real gRPC interface: property-based random byte strings (fast-check), every
// boundary length, NUL/control/non-ASCII bytes, huge fields, fields of the wrong wire type (hand-encoded
// protobuf sent with identity serializers), and malformed gRPC framing from a raw HTTP/2 client. The
// answer is always INVALID_ARGUMENT or another correct status, no process crashes, and ListKeys at the
// end holds exactly the keys that were acknowledged.
import { connect } from 'node:http2';
import fc from 'fast-check';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { grpc, kvClient } from './helpers/client.js';
import { TestCluster } from './helpers/processes.js';
import { reportFigures } from './helpers/verifier.js';

let cluster: TestCluster;
let raw: grpc.Client;
/** Keys acknowledged by a successful Put (latin1 strings, so bytes map 1:1) and their values. */
const stored = new Map<string, string>();
const tried: Record<string, number> = {};
const count = (what: string, n = 1): void => {
  tried[what] = (tried[what] ?? 0) + n;
};

beforeAll(async () => {
  cluster = await TestCluster.start({ workers: 2 });
  raw = new grpc.Client(cluster.address, grpc.credentials.createInsecure(), { 'grpc.max_send_message_length': -1 });
});

afterAll(async () => {
  raw?.close();
  await cluster?.stop();
});

// --- hand-encoded protobuf -------------------------------------------------------------------------
function varint(n: number): Buffer {
  const out: number[] = [];
  while (n > 0x7f) {
    out.push((n % 0x80) | 0x80);
    n = Math.floor(n / 0x80);
  }
  out.push(n);
  return Buffer.from(out);
}
const stringField = (field: number, bytes: Buffer): Buffer => Buffer.concat([varint(field * 8 + 2), varint(bytes.length), bytes]);
const keyValue = (key: Buffer, value?: Buffer): Buffer => Buffer.concat([stringField(1, key), value ? stringField(2, value) : Buffer.alloc(0)]);

/** Field 1 of a response message (old_value / value), as bytes. */
function firstString(buf: Buffer): Buffer {
  if (buf.length === 0) return Buffer.alloc(0);
  let pos = 1;
  let len = 0;
  let shift = 0;
  for (;;) {
    const b = buf[pos++];
    len += (b & 0x7f) * 2 ** shift;
    shift += 7;
    if ((b & 0x80) === 0) break;
  }
  return buf.subarray(pos, pos + len);
}

interface Answer {
  code: number;
  details: string;
  body?: Buffer;
}

function call(method: 'Put' | 'Get' | 'Delete' | 'ListKeys', body: Buffer): Promise<Answer> {
  return new Promise((resolve) => {
    raw.makeUnaryRequest(
      `/kvstore.KeyValueStore/${method}`,
      (b: Buffer) => b,
      (b: Buffer) => b,
      body,
      { deadline: Date.now() + 10_000 },
      (err: grpc.ServiceError | null, res?: Buffer) => resolve(err ? { code: err.code, details: err.details } : { code: grpc.status.OK, details: '', body: res }),
    );
  });
}

const isAscii = (b: Buffer): boolean => b.every((x) => x < 0x80);
const validKey = (k: Buffer): boolean => k.length >= 1 && k.length <= 128 && isAscii(k);
const validValue = (v: Buffer): boolean => v.length <= 2048 && isAscii(v);

/** Put, check the status against the contract, and read a successful write back byte for byte. */
async function putAndCheck(key: Buffer, value: Buffer): Promise<void> {
  const r = await call('Put', keyValue(key, value));
  if (validKey(key) && validValue(value)) {
    expect(r.code, r.details).toBe(grpc.status.OK);
    const got = await call('Get', keyValue(key));
    expect(got.code, got.details).toBe(grpc.status.OK);
    expect(firstString(got.body!).equals(value)).toBe(true);
    stored.set(key.toString('latin1'), value.toString('latin1'));
  } else {
    expect(r.code, r.details).toBe(grpc.status.INVALID_ARGUMENT);
    expect(r.details).toMatch(validKey(key) ? /^value: / : /^key: /);
  }
}

// Generators: mostly near the rules, so both sides of every boundary are hit often.
const LENGTHS = [0, 1, 2, 63, 127, 128, 129, 130, 255, 2047, 2048, 2049, 4096];
const asciiBytes = (lengths: fc.Arbitrary<number>): fc.Arbitrary<Buffer> =>
  lengths.chain((n) => fc.uint8Array({ minLength: n, maxLength: n, max: 0x7f })).map((a) => Buffer.from(a));
const anyBytes = (max: number): fc.Arbitrary<Buffer> => fc.uint8Array({ maxLength: max }).map((a) => Buffer.from(a));
const controlBytes = (max: number): fc.Arbitrary<Buffer> =>
  fc.array(fc.constantFrom(0, 1, 7, 8, 9, 10, 13, 27, 31, 127), { minLength: 1, maxLength: max }).map((a) => Buffer.from(a));
const unicode = (max: number): fc.Arbitrary<Buffer> => fc.string({ unit: 'grapheme', maxLength: max }).map((s) => Buffer.from(s, 'utf8'));
const sqlish = fc.constantFrom("'; DROP TABLE kv; --", '%', '_', 'a%b_c', '" OR 1=1', '\\', '/', ' ').map((s) => Buffer.from(s));
const keys = fc.oneof(asciiBytes(fc.constantFrom(...LENGTHS.filter((n) => n <= 200))), asciiBytes(fc.integer({ min: 0, max: 140 })), anyBytes(140), controlBytes(130), unicode(40), sqlish);
const values = fc.oneof(asciiBytes(fc.constantFrom(...LENGTHS)), anyBytes(2100), controlBytes(50), unicode(600), sqlish);

describe('bad input over gRPC', () => {
  it('answers random keys and values by the rules, and stores exactly the valid ones (property)', async () => {
    const runs = 300;
    await fc.assert(fc.asyncProperty(keys, values, putAndCheck), { numRuns: runs, seed: Number(process.env.KV_FC_SEED ?? 20261126) });
    count('random put (fast-check)', runs);
    await fc.assert(
      fc.asyncProperty(keys, async (key) => {
        for (const method of ['Get', 'Delete'] as const) {
          const r = await call(method, keyValue(key));
          if (validKey(key)) expect([grpc.status.OK, grpc.status.NOT_FOUND], r.details).toContain(r.code);
          else expect(r.code, r.details).toBe(grpc.status.INVALID_ARGUMENT);
        }
        stored.delete(key.toString('latin1'));
      }),
      { numRuns: 100, seed: 7 },
    );
    count('random get+delete (fast-check)', 200);
  });

  it('stores every ASCII byte, NUL included, and refuses every non-ASCII byte', async () => {
    for (let b = 0; b < 256; b++) {
      await putAndCheck(Buffer.from([b]), Buffer.from([b, 0, b]));
      await putAndCheck(Buffer.from(`byte/${b}`), Buffer.from([b]));
    }
    // 'a' and 'a\0' are different keys.
    await putAndCheck(Buffer.from('a'), Buffer.from('one'));
    await putAndCheck(Buffer.from('a\0'), Buffer.from('two'));
    expect(firstString((await call('Get', keyValue(Buffer.from('a')))).body!).toString()).toBe('one');
    count('single-byte keys and values', 512 + 2);
  });

  it('takes every boundary length exactly by the rules', async () => {
    for (const k of [0, 1, 127, 128, 129, 1000]) {
      for (const v of [0, 1, 2047, 2048, 2049, 10_000]) await putAndCheck(Buffer.alloc(k, 0x6b), Buffer.alloc(v, 0x76));
    }
    count('boundary lengths', 36);
  });

  it('refuses huge fields with INVALID_ARGUMENT below the message limit and RESOURCE_EXHAUSTED above it', async () => {
    const under = await call('Put', keyValue(Buffer.alloc(60_000, 0x6b), Buffer.from('v')));
    expect(under.code, under.details).toBe(grpc.status.INVALID_ARGUMENT);
    expect(under.details).toMatch(/key: .*60000 bytes/);
    for (const size of [70_000, 1024 * 1024, 8 * 1024 * 1024]) {
      const over = await call('Put', keyValue(Buffer.from('k'), Buffer.alloc(size, 0x76)));
      expect(over.code, over.details).toBe(grpc.status.RESOURCE_EXHAUSTED);
    }
    count('huge fields', 4);
  });

  it('refuses fields of the wrong wire type with INVALID_ARGUMENT and never misreads them as a key', async () => {
    const abc = Buffer.from('abc');
    const cases: [string, Buffer][] = [
      // Read by field number alone, this would be the key "abc".
      ['key as varint', Buffer.concat([Buffer.from([0x08, 0x03]), abc])],
      ['key as fixed32', Buffer.concat([Buffer.from([0x0d]), Buffer.from('abcd')])],
      ['key as fixed64', Buffer.concat([Buffer.from([0x09]), Buffer.from('abcdefgh')])],
      ['key as start-group', Buffer.from([0x0b, 0x0c])],
      ['value as varint', Buffer.concat([stringField(1, Buffer.from('wt/value')), Buffer.from([0x10, 0x05])])],
      ['field number 0', Buffer.from([0x02, 0x01, 0x61])],
      ['length past the end', Buffer.from([0x0a, 0x40, 0x61, 0x62])],
      ['truncated varint', Buffer.from([0x0a, 0xff])],
      ['garbage', Buffer.from('\xff\xff\xff\xff\xff\xff', 'latin1')],
    ];
    for (const [name, body] of cases) {
      for (const method of ['Put', 'Get', 'Delete'] as const) {
        if (name.startsWith('value') && method !== 'Put') continue;
        const r = await call(method, body);
        expect(r.code, `${name} ${method}: ${r.details}`).toBe(grpc.status.INVALID_ARGUMENT);
        count('wrong wire type / malformed protobuf');
      }
    }
    expect((await call('Get', keyValue(abc))).code).toBe(grpc.status.NOT_FOUND);
    // An unknown field is skipped, as proto3 requires, and the known ones are used.
    const ok = await call('Put', Buffer.concat([keyValue(Buffer.from('wt/unknown'), Buffer.from('v')), Buffer.from([0x18, 0x01])]));
    expect(ok.code, ok.details).toBe(grpc.status.OK);
    stored.set('wt/unknown', 'v');
    count('unknown field');
  });

  it('answers malformed gRPC framing from a raw HTTP/2 client with a correct status', async () => {
    const session = connect(`http://${cluster.address}`);
    session.on('error', () => undefined);
    const frame = (flag: number, declared: number, payload: Buffer): Buffer => {
      const h = Buffer.alloc(5);
      h.writeUInt8(flag, 0);
      h.writeUInt32BE(declared, 1);
      return Buffer.concat([h, payload]);
    };
    const msg = keyValue(Buffer.from('h2/key'), Buffer.from('v'));
    const send = (headers: Record<string, string>, body: Buffer): Promise<{ http: number; grpc: number | undefined; message: string }> =>
      new Promise((resolve) => {
        const req = session.request({ ':method': 'POST', ':path': '/kvstore.KeyValueStore/Put', 'content-type': 'application/grpc', te: 'trailers', ...headers });
        let http = 0;
        let code: number | undefined;
        let message = '';
        const take = (h: Record<string, unknown>): void => {
          if (h['grpc-status'] !== undefined) code = Number(h['grpc-status']);
          if (h['grpc-message'] !== undefined) message = decodeURIComponent(String(h['grpc-message']));
        };
        req.on('response', (h) => {
          http = Number(h[':status']);
          take(h);
        });
        req.on('trailers', take);
        req.on('data', () => undefined);
        req.on('error', () => undefined);
        const timer = setTimeout(() => req.close(), 10_000);
        req.on('close', () => {
          clearTimeout(timer);
          resolve({ http, grpc: code, message });
        });
        req.end(body);
      });
    // What gRPC itself prescribes for a broken frame (doc/statuscodes.md): INTERNAL for a message that
    // cannot be parsed or decompressed, UNIMPLEMENTED for a cardinality violation or an unsupported
    // encoding, RESOURCE_EXHAUSTED past the size limit; INVALID_ARGUMENT where the store itself judges.
    const FRAMING = [grpc.status.INVALID_ARGUMENT, grpc.status.INTERNAL, grpc.status.UNIMPLEMENTED, grpc.status.RESOURCE_EXHAUSTED];
    const cases: [string, Record<string, string>, Buffer, number[]][] = [
      ['declared length longer than the body', {}, frame(0, 100, msg), FRAMING],
      ['declared length shorter than the body', {}, frame(0, 3, msg), FRAMING],
      ['truncated 5-byte prefix', {}, Buffer.from([0, 0, 0]), FRAMING],
      ['empty body', {}, Buffer.alloc(0), FRAMING],
      // gRPC's table says INTERNAL, but grpc-js reads the flag as "identity" when no grpc-encoding is
      // declared; the payload is a valid message, so it is stored as sent (checked below).
      ['compressed flag without grpc-encoding', {}, frame(1, msg.length, msg), [grpc.status.OK, ...FRAMING]],
      ['compressed flag with gzip but not gzip', { 'grpc-encoding': 'gzip' }, frame(1, msg.length, msg), FRAMING],
      ['unknown grpc-encoding', { 'grpc-encoding': 'snappy-zz' }, frame(1, msg.length, msg), [grpc.status.UNIMPLEMENTED]],
      ['4 GiB declared length', {}, frame(0, 0xffffffff, msg), [grpc.status.RESOURCE_EXHAUSTED]],
      ['two messages in a unary call', {}, Buffer.concat([frame(0, msg.length, msg), frame(0, msg.length, msg)]), FRAMING],
      ['unknown method', { ':path': '/kvstore.KeyValueStore/Nope' }, frame(0, msg.length, msg), [grpc.status.UNIMPLEMENTED]],
      ['wrong content-type', { 'content-type': 'text/plain' }, frame(0, msg.length, msg), []],
      ['GET instead of POST', { ':method': 'GET' }, Buffer.alloc(0), []],
    ];
    const seen: Record<string, string> = {};
    try {
      for (const [name, headers, body, allowed] of cases) {
        const r = await send(headers, body);
        seen[name] = r.grpc !== undefined ? `${grpc.status[r.grpc]}${r.message ? `: ${r.message}` : ''}` : `HTTP ${r.http}`;
        if (allowed.length > 0) expect(allowed, `${name}: ${seen[name]}`).toContain(r.grpc);
        // No gRPC status for a request that is not gRPC at all: an HTTP error (415 for content-type).
        else expect(r.http >= 400 || (r.grpc !== undefined && r.grpc !== grpc.status.OK), `${name}: ${seen[name]}`).toBe(true);
        count('malformed gRPC frames (raw HTTP/2)');
      }
    } finally {
      session.close();
    }
    const h2 = await call('Get', keyValue(Buffer.from('h2/key')));
    if (h2.code === grpc.status.OK) {
      expect(firstString(h2.body!).toString()).toBe('v');
      stored.set('h2/key', 'v');
    }
    reportFigures('raw-http2-answers', seen);
  });

  it('is still up, and ListKeys holds exactly the acknowledged keys, each valid', async () => {
    expect(cluster.gateway.child!.exitCode).toBeNull();
    for (const w of cluster.workers.values()) expect(w.child!.exitCode).toBeNull();
    const kv = kvClient(cluster.address);
    const listed = await kv.list();
    kv.close();
    for (const k of listed) expect(validKey(Buffer.from(k, 'latin1')) && Buffer.byteLength(k, 'utf8') === k.length).toBe(true);
    expect(new Set(listed)).toEqual(new Set(stored.keys()));
    for (const [k, v] of stored) {
      const r = await call('Get', keyValue(Buffer.from(k, 'latin1')));
      expect(firstString(r.body!).toString('latin1')).toBe(v);
    }
    const total = Object.values(tried).reduce((a, b) => a + b, 0);
    reportFigures('bad-input', { inputsTried: total, byKind: tried, keysStoredAndVerified: stored.size, processesCrashed: 0 });
  });
});
