// The admin token check: who gets in under each policy, with which status, and that the configured
// token never appears in an error message.
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Metadata, status } from '@grpc/grpc-js';
import { describe, expect, it } from 'vitest';
import { adminMetadata, createAdminAuth, readAdminToken } from '../shared/auth.js';
import { KvError } from '../shared/errors.js';

const TOKEN = 'b7f3c1d2e4a5968778695a4b3c2d1e0f';

function codeOf(fn: () => void): number | 'ok' {
  try {
    fn();
    return 'ok';
  } catch (err) {
    expect(err).toBeInstanceOf(KvError);
    expect((err as KvError).message).not.toContain(TOKEN);
    return (err as KvError).code;
  }
}

const header = (value: string): Metadata => {
  const md = new Metadata();
  md.set('authorization', value);
  return md;
};

describe('admin token check', () => {
  const auth = createAdminAuth({ token: TOKEN, securityOn: true });

  it('lets in exactly the configured bearer token', () => {
    expect(auth.mode).toBe('token');
    expect(codeOf(() => auth.check(adminMetadata(TOKEN)))).toBe('ok');
    expect(codeOf(() => auth.check(header(`bearer ${TOKEN}`)))).toBe('ok');
  });

  it('refuses a missing, malformed, wrong, truncated or extended token with UNAUTHENTICATED', () => {
    for (const md of [
      new Metadata(),
      header(TOKEN),
      header(`Basic ${TOKEN}`),
      header('Bearer '),
      header('Bearer wrong-token-wrong-token'),
      header(`Bearer ${TOKEN.slice(0, -1)}`),
      header(`Bearer ${TOKEN}0`),
      header(`Bearer ${TOKEN.toUpperCase()}`),
    ]) {
      expect(codeOf(() => auth.check(md))).toBe(status.UNAUTHENTICATED);
    }
    const twice = adminMetadata(TOKEN);
    twice.add('authorization', 'Bearer other-token-other-token');
    expect(codeOf(() => auth.check(twice))).toBe(status.UNAUTHENTICATED);
  });

  it('with security on and no token configured, refuses every admin call with PERMISSION_DENIED', () => {
    const disabled = createAdminAuth({ token: undefined, securityOn: true });
    expect(disabled.mode).toBe('disabled');
    expect(codeOf(() => disabled.check(adminMetadata(TOKEN)))).toBe(status.PERMISSION_DENIED);
    expect(codeOf(() => disabled.check(new Metadata()))).toBe(status.PERMISSION_DENIED);
  });

  it('with security off and no token, stays open like the rest of the insecure default', () => {
    const open = createAdminAuth({ token: undefined, securityOn: false });
    expect(open.mode).toBe('open');
    expect(codeOf(() => open.check(new Metadata()))).toBe('ok');
  });

  it('reads the token from the environment or a file, and rejects weak or ambiguous configuration', () => {
    const dir = mkdtempSync(join(tmpdir(), 'kvstore-auth-'));
    try {
      const file = join(dir, 'token');
      writeFileSync(file, `${TOKEN}\n`);
      expect(readAdminToken(file, {})).toBe(TOKEN);
      expect(readAdminToken(undefined, { KV_ADMIN_TOKEN: TOKEN })).toBe(TOKEN);
      expect(readAdminToken(undefined, {})).toBeUndefined();
      expect(() => readAdminToken(file, { KV_ADMIN_TOKEN: TOKEN })).toThrow(/not both/);
      expect(() => readAdminToken(undefined, { KV_ADMIN_TOKEN: 'short' })).toThrow(/too short/);
      expect(() => readAdminToken(undefined, { KV_ADMIN_TOKEN: 'has a space in the middle of it' })).toThrow(/printable ASCII/);
      expect(() => readAdminToken(join(dir, 'missing'), {})).toThrow(/cannot read .*missing: ENOENT/);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
