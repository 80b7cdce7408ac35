import { describe, expect, it } from 'vitest';
import { KvError } from '../shared/errors.js';
import { MAX_KEY_BYTES, MAX_VALUE_BYTES, checkKey, checkValue } from '../shared/validation.js';

function rejection(fn: () => unknown): KvError {
  try {
    fn();
  } catch (err) {
    if (err instanceof KvError) return err;
    throw err;
  }
  throw new Error('expected a rejection');
}

describe('key rules', () => {
  it('accepts 1 and 128 bytes, rejects 0 and 129 with the length in the message', () => {
    expect(checkKey('a')).toBe('a');
    expect(checkKey('k'.repeat(MAX_KEY_BYTES))).toHaveLength(128);
    expect(rejection(() => checkKey('')).message).toMatch(/^key: .*1 to 128 bytes, got 0 bytes/);
    const e = rejection(() => checkKey('k'.repeat(129)));
    expect(e.code).toBe(3);
    expect(e.message).toMatch(/^key: .*got 129 bytes/);
  });

  it('accepts every ASCII byte including NUL and control characters', () => {
    const all = Array.from({ length: 128 }, (_, i) => String.fromCharCode(i)).join('');
    expect(checkKey(all.slice(0, 128))).toBe(all.slice(0, 128));
    expect(checkKey('\0')).toBe('\0');
  });

  it('rejects non-ASCII and names the byte position', () => {
    expect(rejection(() => checkKey('ab\u00e9')).message).toMatch(/^key: must be ASCII.*byte position 2/);
    // Position counts UTF-8 bytes, not characters: "é" is two bytes.
    expect(rejection(() => checkKey('\u00e9x\u00ff')).message).toMatch(/byte position 0/);
    expect(rejection(() => checkKey('a\u{1F600}')).message).toMatch(/byte position 1/);
    expect(rejection(() => checkKey('\u00e9\u00e9')).code).toBe(3);
  });

  it('rejects non-strings', () => {
    expect(rejection(() => checkKey(undefined)).message).toMatch(/^key: must be a string/);
  });
});

describe('value rules', () => {
  it('accepts 0 and 2048 bytes, rejects 2049', () => {
    expect(checkValue('')).toBe('');
    expect(checkValue('v'.repeat(MAX_VALUE_BYTES))).toHaveLength(2048);
    expect(rejection(() => checkValue('v'.repeat(2049))).message).toMatch(/^value: .*0 to 2048 bytes, got 2049 bytes/);
  });

  it('rejects non-ASCII with its byte position', () => {
    expect(rejection(() => checkValue('abc\u0080')).message).toMatch(/^value: must be ASCII.*byte position 3/);
  });
});
