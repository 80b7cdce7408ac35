// Contract limits (DESIGN.md): keys 1..128 bytes, values 0..2048 bytes, ASCII only. Strings arrive
// decoded from UTF-8, so any code unit above 0x7F means a non-ASCII byte; for pure ASCII the string
// length equals the byte length.
import { invalidArgument } from './errors.js';

export const MAX_KEY_BYTES = 128;
export const MAX_VALUE_BYTES = 2048;

function firstNonAscii(s: string): number {
  for (let i = 0; i < s.length; i++) if (s.charCodeAt(i) > 0x7f) return i;
  return -1;
}

function byteOffset(s: string, charIndex: number): number {
  return Buffer.byteLength(s.slice(0, charIndex), 'utf8');
}

export function checkKey(key: unknown): string {
  if (typeof key !== 'string') throw invalidArgument('key: must be a string');
  if (key.length === 0) throw invalidArgument('key: must be 1 to 128 bytes, got 0 bytes (empty key)');
  const bad = firstNonAscii(key);
  if (bad >= 0) {
    throw invalidArgument(
      `key: must be ASCII (bytes 0x00-0x7F); non-ASCII byte at byte position ${byteOffset(key, bad)}`,
    );
  }
  if (key.length > MAX_KEY_BYTES) {
    throw invalidArgument(`key: must be 1 to ${MAX_KEY_BYTES} bytes, got ${key.length} bytes`);
  }
  return key;
}

export function checkValue(value: unknown): string {
  if (typeof value !== 'string') throw invalidArgument('value: must be a string');
  const bad = firstNonAscii(value);
  if (bad >= 0) {
    throw invalidArgument(
      `value: must be ASCII (bytes 0x00-0x7F); non-ASCII byte at byte position ${byteOffset(value, bad)}`,
    );
  }
  if (value.length > MAX_VALUE_BYTES) {
    throw invalidArgument(`value: must be 0 to ${MAX_VALUE_BYTES} bytes, got ${value.length} bytes`);
  }
  return value;
}
