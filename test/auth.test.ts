// The admin token check: who gets in under each policy, with which status, and that the configured
// token never appears in an error message.
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import * as grpc from '@grpc/grpc-js';
import { Metadata, status } from '@grpc/grpc-js';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { adminMetadata, createAdminAuth, guardService, readAdminToken } from '../shared/auth.js';
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

describe('guardService over real gRPC', () => {
  // A stand-in for the admin service: one unary and one server-streaming method, raw bytes.
  const bytes = { requestSerialize: (b: Buffer) => b, requestDeserialize: (b: Buffer) => b, responseSerialize: (b: Buffer) => b, responseDeserialize: (b: Buffer) => b };
  const definition: grpc.ServiceDefinition = {
    Change: { path: '/test.Admin/Change', requestStream: false, responseStream: false, ...bytes },
    Watch: { path: '/test.Admin/Watch', requestStream: false, responseStream: true, ...bytes },
  };
  let server: grpc.Server;
  let client: grpc.Client;
  let ran = 0;

  beforeAll(async () => {
    server = new grpc.Server();
    const impl: grpc.UntypedServiceImplementation = {
      Change: (_call: grpc.ServerUnaryCall<Buffer, Buffer>, cb: grpc.sendUnaryData<Buffer>) => {
        ran++;
        cb(null, Buffer.from('done'));
      },
      Watch: (call: grpc.ServerWritableStream<Buffer, Buffer>) => {
        ran++;
        call.write(Buffer.from('event'));
        call.end();
      },
    };
    server.addService(definition, guardService(createAdminAuth({ token: TOKEN, securityOn: true }), impl));
    const port = await new Promise<number>((resolve, reject) =>
      server.bindAsync('127.0.0.1:0', grpc.ServerCredentials.createInsecure(), (err, p) => (err ? reject(err) : resolve(p))),
    );
    client = new grpc.Client(`127.0.0.1:${port}`, grpc.credentials.createInsecure());
  });

  afterAll(() => {
    client?.close();
    server?.forceShutdown();
  });

  const unary = (md: Metadata): Promise<number | 'ok'> =>
    new Promise((resolve) => {
      client.makeUnaryRequest('/test.Admin/Change', (b: Buffer) => b, (b: Buffer) => b, Buffer.alloc(0), md, { deadline: Date.now() + 5_000 }, (err) =>
        resolve(err ? err.code : 'ok'),
      );
    });
  const streaming = (md: Metadata): Promise<number | 'ok'> =>
    new Promise((resolve) => {
      const call = client.makeServerStreamRequest('/test.Admin/Watch', (b: Buffer) => b, (b: Buffer) => b, Buffer.alloc(0), md, { deadline: Date.now() + 5_000 });
      call.on('data', () => undefined);
      call.on('error', (err: grpc.ServiceError) => resolve(err.code));
      call.on('end', () => resolve('ok'));
    });

  it('runs no handler without the token, and every handler with it', async () => {
    expect(await unary(new Metadata())).toBe(status.UNAUTHENTICATED);
    expect(await unary(adminMetadata('wrong-token-wrong-token'))).toBe(status.UNAUTHENTICATED);
    expect(await streaming(new Metadata())).toBe(status.UNAUTHENTICATED);
    expect(ran).toBe(0);
    expect(await unary(adminMetadata(TOKEN))).toBe('ok');
    expect(await streaming(adminMetadata(TOKEN))).toBe('ok');
    expect(ran).toBe(2);
  });
});
