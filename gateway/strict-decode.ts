// Strict decoding of public requests. protobufjs decodes a known field by its field number alone: a
// `key` sent with the wrong wire type (a varint, a fixed32) is read as a length-prefixed string anyway,
// so a malformed message could be taken for a different, valid key. And grpc-js answers a message it
// cannot decode with INTERNAL, which reads as the store's fault. Here every request is first scanned
// at the wire level; one with a wrong wire type, a truncated field or undecodable bytes becomes a
// marker that the handler answers with INVALID_ARGUMENT naming the problem. Nothing is stored.
import type * as grpc from '@grpc/grpc-js';

const WIRE_NAMES = ['varint', '64-bit', 'length-delimited', 'start-group', 'end-group', '32-bit'];
const LENGTH_DELIMITED = 2;
const PROBLEM = Symbol('request problem');

export interface BadRequest {
  [PROBLEM]: string;
}

/** Every field of the public request messages is a string (wire type 2): key = 1, value = 2. */
const FIELD_NAMES: Record<number, string> = { 1: 'key', 2: 'value' };
/** The string fields of each method's request; Empty requests have none (unknown fields are skipped). */
const REQUEST_FIELDS: Record<string, number[]> = { Put: [1, 2], Get: [1], Delete: [1] };

function readVarint(buf: Buffer, pos: number): [number, number] | undefined {
  let value = 0;
  let shift = 0;
  for (let i = pos; i < buf.length && i < pos + 10; i++) {
    const b = buf[i];
    // Beyond 2^53 precision is lost, but such a tag or length is invalid here anyway.
    value += (b & 0x7f) * 2 ** shift;
    shift += 7;
    if ((b & 0x80) === 0) return [value, i + 1];
  }
  return undefined;
}

/** Why `buf` is not a well-formed request of a method whose request fields are all strings, or undefined. */
export function wireProblem(buf: Buffer, fields: ReadonlySet<number>): string | undefined {
  let pos = 0;
  while (pos < buf.length) {
    const tag = readVarint(buf, pos);
    if (!tag) return `request: truncated field tag at byte ${pos}`;
    const [t, afterTag] = tag;
    const field = Math.floor(t / 8);
    const wire = t % 8;
    if (field === 0) return `request: field number 0 at byte ${pos} is not valid protobuf`;
    if (fields.has(field) && wire !== LENGTH_DELIMITED) {
      return `${FIELD_NAMES[field] ?? `field ${field}`}: must be a string (wire type 2, length-delimited), got wire type ${wire} (${WIRE_NAMES[wire] ?? 'unknown'})`;
    }
    let next: number;
    if (wire === 0) {
      const v = readVarint(buf, afterTag);
      if (!v) return `request: truncated varint at byte ${afterTag}`;
      next = v[1];
    } else if (wire === 1) next = afterTag + 8;
    else if (wire === 5) next = afterTag + 4;
    else if (wire === LENGTH_DELIMITED) {
      const len = readVarint(buf, afterTag);
      if (!len) return `request: truncated length at byte ${afterTag}`;
      next = len[1] + len[0];
    } else return `request: unsupported wire type ${wire} at byte ${pos}`;
    if (next > buf.length) return `request: field ${field} runs past the end of the message (${buf.length} bytes)`;
    pos = next;
  }
  return undefined;
}

/** The problem a request was marked with by strictService, if any. */
export function requestProblem(req: unknown): string | undefined {
  return typeof req === 'object' && req !== null && PROBLEM in req ? (req as BadRequest)[PROBLEM] : undefined;
}

/** A copy of `service` whose request decoders mark malformed messages instead of throwing. */
export function strictService(service: grpc.ServiceDefinition): grpc.ServiceDefinition {
  const out: Record<string, grpc.MethodDefinition<unknown, unknown>> = {};
  for (const [name, method] of Object.entries(service)) {
    const fields = new Set(REQUEST_FIELDS[name] ?? []);
    const decode = method.requestDeserialize;
    out[name] = {
      ...method,
      requestDeserialize: (buf: Buffer): unknown => {
        const problem = wireProblem(buf, fields);
        if (problem) return { [PROBLEM]: problem } satisfies BadRequest;
        try {
          return decode(buf);
        } catch (err) {
          return { [PROBLEM]: `request: not a valid protobuf message (${(err as Error).message})` } satisfies BadRequest;
        }
      },
    };
  }
  return out as grpc.ServiceDefinition;
}
