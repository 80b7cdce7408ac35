// TLS for clients of the gateway and mutual TLS between gateway and workers, with real processes:
// the right certificates get in, everything else is refused, at the gateway and at each worker.
import { spawnSync } from 'node:child_process';
import * as grpc from '@grpc/grpc-js';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { WorkerLink } from '../gateway/worker-link.js';
import { adminMetadata } from '../shared/auth.js';
import { OpType, adminApi } from '../shared/proto.js';
import { clientCredentials, workerChannelTls, type InternalTlsSettings } from '../shared/tls.js';
import { codeOf, kvClient } from './helpers/client.js';
import { makeTestCerts, read, type TestCerts } from './helpers/certs.js';
import { Proc, TestCluster, dist, waitFor } from './helpers/processes.js';

const ADMIN_TOKEN = '3c9a1f0e7d5b4a2c8e6f1d0b9a7c5e3f';
let certs: TestCerts;
let cluster: TestCluster;
let gatewayArgs: string[];

beforeAll(async () => {
  certs = makeTestCerts();
  const internal = (pair: { cert: string; key: string }): string[] => [
    '--internal-tls-ca', certs.internalCa, '--internal-tls-cert', pair.cert, '--internal-tls-key', pair.key,
  ];
  // Workers are dialled at 127.0.0.1 but their certificate names "kv-worker", as a pod certificate
  // names the Service rather than each pod IP: the server-name setting is what makes that work.
  gatewayArgs = [
    '--tls-cert', certs.gateway.cert, '--tls-key', certs.gateway.key, '--tls-client-ca', certs.publicCa,
    ...internal(certs.gatewayInternal), '--internal-tls-server-name', 'kv-worker',
  ];
  cluster = await TestCluster.start({ workers: 2, workerArgs: internal(certs.worker), gatewayArgs, env: { KV_ADMIN_TOKEN: ADMIN_TOKEN } });
});

afterAll(async () => {
  await cluster?.stop();
  certs?.remove();
});

const goodClient = (): grpc.ChannelCredentials => clientCredentials({ ca: certs.publicCa, cert: certs.client.cert, key: certs.client.key });

describe('gateway TLS', () => {
  it('serves Put, Get, Delete, ListKeys and Backup over TLS, with mutual TLS to every worker', async () => {
    const kv = kvClient(cluster.address, 10_000, goodClient());
    try {
      const keys = Array.from({ length: 40 }, (_, i) => `tls/${i}`);
      for (const k of keys) expect(await kv.put(k, `v:${k}`)).toBe('');
      for (const k of keys) expect(await kv.get(k)).toBe(`v:${k}`);
      expect((await kv.list()).filter((k) => k.startsWith('tls/'))).toEqual([...keys].sort());
      const backup = await kv.backup();
      expect(backup.success, backup.message).toBe(true);
      await kv.del(keys[0]);
      expect(await codeOf(kv.get(keys[0]))).toBe(grpc.status.NOT_FOUND);
    } finally {
      kv.close();
    }
  });

  it('refuses plaintext, a client without a certificate, one from another CA, and one that does not trust the gateway', async () => {
    const attempts: Array<[string, grpc.ChannelCredentials]> = [
      ['plaintext', grpc.credentials.createInsecure()],
      ['no client certificate', clientCredentials({ ca: certs.publicCa })],
      ['client certificate from another CA', clientCredentials({ ca: certs.publicCa, cert: certs.rogueClient.cert, key: certs.rogueClient.key })],
      ['gateway not trusted', clientCredentials({ ca: certs.rogueCa, cert: certs.client.cert, key: certs.client.key })],
    ];
    for (const [what, creds] of attempts) {
      const kv = kvClient(cluster.address, 3_000, creds);
      try {
        expect(await codeOf(kv.put(`refused/${what}`, 'x')), what).toBe(grpc.status.UNAVAILABLE);
      } finally {
        kv.close();
      }
    }
    // None of them stored anything.
    const kv = kvClient(cluster.address, 10_000, goodClient());
    try {
      expect((await kv.list()).filter((k) => k.startsWith('refused/'))).toEqual([]);
    } finally {
      kv.close();
    }
  });

  it('kvctl talks TLS with --ca/--cert/--key and fails with exit 4 without a certificate', () => {
    const kvctl = (args: string[]): { code: number | null; stdout: string; stderr: string } => {
      const r = spawnSync(process.execPath, [dist('cli/kvctl.js'), '--address', cluster.address, '--timeout', '3000', ...args], { encoding: 'utf8', timeout: 20_000 });
      return { code: r.status, stdout: r.stdout, stderr: r.stderr };
    };
    const tls = ['--ca', certs.publicCa, '--cert', certs.client.cert, '--key', certs.client.key];
    expect(kvctl([...tls, 'put', 'kvctl-tls', 'yes'])).toMatchObject({ code: 0 });
    expect(kvctl([...tls, 'get', 'kvctl-tls'])).toMatchObject({ code: 0, stdout: 'yes\n', stderr: '' });
    expect(kvctl(['--ca', certs.publicCa, 'get', 'kvctl-tls'])).toMatchObject({ code: 4 });
    expect(kvctl(['get', 'kvctl-tls'])).toMatchObject({ code: 4 });
  });
});

describe('admin RPCs with security on', () => {
  const adminStatus = (address: string, md: grpc.Metadata): Promise<number | 'ok'> => {
    const Admin = adminApi().Admin;
    const client = new Admin(address, goodClient());
    return new Promise<number | 'ok'>((resolve) => {
      (client as unknown as { Status(r: object, m: grpc.Metadata, o: grpc.CallOptions, cb: (e: grpc.ServiceError | null) => void): void }).Status(
        {}, md, { deadline: Date.now() + 5_000 }, (err) => resolve(err ? err.code : 'ok'),
      );
    }).finally(() => client.close());
  };

  it('need the admin token: none or a wrong one is UNAUTHENTICATED, the right one works (also from kvctl)', async () => {
    expect(await adminStatus(cluster.address, new grpc.Metadata())).toBe(grpc.status.UNAUTHENTICATED);
    expect(await adminStatus(cluster.address, adminMetadata(`${ADMIN_TOKEN}x`))).toBe(grpc.status.UNAUTHENTICATED);
    expect(await adminStatus(cluster.address, adminMetadata(ADMIN_TOKEN))).toBe('ok');
    const kvctl = (env: Record<string, string>): number | null =>
      spawnSync(
        process.execPath,
        [dist('cli/kvctl.js'), '--address', cluster.address, '--timeout', '3000', '--ca', certs.publicCa, '--cert', certs.client.cert, '--key', certs.client.key, 'cluster', 'status'],
        { encoding: 'utf8', timeout: 20_000, env: { ...process.env, KV_ADMIN_TOKEN: '', ...env } },
      ).status;
    expect(kvctl({ KV_ADMIN_TOKEN: ADMIN_TOKEN })).toBe(0);
    expect(kvctl({})).toBe(6);
  });

  it('a flood of wrong tokens is counted one by one but logged at most once a second, naming the caller', async () => {
    const lines = (msg: string): string[] => cluster.gateway.output.join('').split('\n').filter((l) => l.includes(`"msg":"${msg}"`));
    const before = { refused: lines('admin call refused').length, failed: lines('admin call failed').length };
    // One connection for all of them: 200 TLS handshakes would race the deadline on a busy machine.
    const client = new (adminApi().Admin)(cluster.address, goodClient());
    type AdminCall = (r: object, m: grpc.Metadata, o: grpc.CallOptions, cb: (e: grpc.ServiceError | null) => void) => void;
    const call = (method: string, req: object, token: string): Promise<grpc.ServiceError | null> =>
      new Promise((resolve) => ((client as unknown as Record<string, AdminCall>)[method].bind(client))(req, adminMetadata(token), { deadline: Date.now() + 20_000 }, resolve));
    try {
      // The test before was refused too: let its second of silence pass, so this flood's first line shows.
      await new Promise((r) => setTimeout(r, 1100));
      const started = Date.now();
      const errors = await Promise.all(Array.from({ length: 200 }, () => call('Status', {}, `${ADMIN_TOKEN}x`)));
      const seconds = (Date.now() - started) / 1000;
      expect(errors.every((e) => e?.code === grpc.status.UNAUTHENTICATED)).toBe(true);
      const refused = lines('admin call refused').slice(before.refused);
      expect(refused.length).toBeGreaterThanOrEqual(1);
      expect(refused.length).toBeLessThanOrEqual(Math.ceil(seconds) + 1);
      expect(JSON.parse(refused[0])).toMatchObject({ rpc: 'Status', code: 'UNAUTHENTICATED', peer: expect.stringMatching(/^(ipv4:)?127\.0\.0\.1:\d+$/) });
      expect(refused.join('\n')).not.toContain(ADMIN_TOKEN);
      // Right after the flood, an operator's failing call (with the token) is still logged, with its reason.
      const notMember = await call('RemoveMembers', { members: [{ name: 'worker-99', address: '' }] }, ADMIN_TOKEN);
      expect(notMember?.code).toBe(grpc.status.NOT_FOUND);
      // The gateway writes the line before it answers, but the line comes over its stdout pipe and the
      // answer over the TCP connection, and nothing orders the two here: wait for the line to arrive.
      const failed = await waitFor('the failed RemoveMembers to be logged', async () => {
        const l = lines('admin call failed').slice(before.failed);
        return l.length > 0 && l;
      }, 10_000);
      expect(failed.map((l) => JSON.parse(l) as { rpc: string; code: string; err: string })).toEqual([
        expect.objectContaining({ rpc: 'RemoveMembers', code: 'NOT_FOUND', err: expect.stringContaining('worker-99') }),
      ]);
    } finally {
      client.close();
    }
    const res = await fetch(`http://127.0.0.1:${cluster.gateway.listening!.metricsPort}/metrics`, { signal: AbortSignal.timeout(5000) });
    const count = Number(/^kv_gateway_admin_requests_total\{method="Status",code="UNAUTHENTICATED"\} (\d+)$/m.exec(await res.text())?.[1]);
    // This test's 200, plus the refused calls of the test before.
    expect(count).toBeGreaterThanOrEqual(200);
  });

  it('are all refused with PERMISSION_DENIED by a TLS gateway that has no token configured', async () => {
    const gateway = new Proc(dist('gateway/main.js'), ['--host', '127.0.0.1', '--port', '0', '--metrics-port', '0', '--members', cluster.members(), '--data-dir', cluster.dataDir, ...gatewayArgs], {
      KV_ADMIN_TOKEN: '',
    });
    try {
      const l = await gateway.start();
      expect(await adminStatus(`127.0.0.1:${l.port}`, adminMetadata(ADMIN_TOKEN))).toBe(grpc.status.PERMISSION_DENIED);
    } finally {
      await gateway.stop();
    }
  });
});

/** A grpc.health.v1 Check straight to a worker, bypassing the gateway. Resolves 'ok' or the status code. */
async function healthCheck(address: string, creds: grpc.ChannelCredentials, options: grpc.ChannelOptions = {}): Promise<number | 'ok'> {
  const client = new grpc.Client(address, creds, options);
  try {
    return await new Promise((resolve) => {
      client.makeUnaryRequest(
        '/grpc.health.v1.Health/Check',
        (b: Buffer) => b,
        (b: Buffer) => b,
        Buffer.alloc(0),
        { deadline: Date.now() + 3_000 },
        (err) => resolve(err ? err.code : "ok"),
      );
    });
  } finally {
    client.close();
  }
}

describe('worker mutual TLS', () => {
  const workerAddress = (): string => `127.0.0.1:${cluster.worker('worker-0').listening!.port}`;
  /** The gateway's own internal TLS settings, with some replaced. */
  const gatewayTls = (over: Partial<InternalTlsSettings>): ReturnType<typeof workerChannelTls> =>
    workerChannelTls({
      internalTlsCa: certs.internalCa,
      internalTlsCert: certs.gatewayInternal.cert,
      internalTlsKey: certs.gatewayInternal.key,
      internalTlsServerName: 'kv-worker',
      ...over,
    });
  /** A health check made exactly as the gateway dials a worker (same settings, same function). */
  const asGateway = (over: Partial<InternalTlsSettings> = {}): Promise<number | 'ok'> => {
    const tls = gatewayTls(over);
    return healthCheck(workerAddress(), tls.credentials!, tls.channelOptions);
  };

  /** A point operation on the exchange socket, dialled exactly as the gateway's link dials it. */
  const exchangeAsGateway = async (over: Partial<InternalTlsSettings> = {}, plaintext = false): Promise<number | 'ok'> => {
    const tls = gatewayTls(over);
    const link = new WorkerLink('worker-0', workerAddress(), { timeoutMs: 3000, maxInflight: 10, tls: plaintext ? undefined : tls.socket });
    try {
      const r = await link.call(OpType.GET, 'tls/exchange', '');
      return r.code === grpc.status.OK || r.code === grpc.status.NOT_FOUND ? 'ok' : r.code;
    } catch (err) {
      return (err as { code: number }).code;
    } finally {
      await link.close();
    }
  };

  it('answers a caller holding the gateway certificate (the control for the refusals below)', async () => {
    expect(await asGateway()).toBe('ok');
    expect(await exchangeAsGateway(), 'exchange socket').toBe('ok');
  });

  it('refuses the exchange socket on the same terms: plaintext, no certificate, another CA, a worker certificate', async () => {
    expect(await exchangeAsGateway({}, true), 'plaintext').toBe(grpc.status.UNAVAILABLE);
    expect(await exchangeAsGateway({ internalTlsCert: certs.rogueClient.cert, internalTlsKey: certs.rogueClient.key }), 'client certificate from another CA').toBe(grpc.status.UNAVAILABLE);
    expect(await exchangeAsGateway({ internalTlsCert: certs.worker.cert, internalTlsKey: certs.worker.key }), 'a worker certificate').toBe(grpc.status.UNAVAILABLE);
    expect(await exchangeAsGateway({ internalTlsCa: certs.rogueCa }), 'worker certificate from another CA').toBe(grpc.status.UNAVAILABLE);
    expect(await exchangeAsGateway({ internalTlsServerName: 'not-kv-worker' }), 'worker certificate for another name').toBe(grpc.status.UNAVAILABLE);
  });

  it('refuses a caller with no certificate, a certificate from another CA, or a worker certificate', async () => {
    const ca = read(certs.internalCa);
    const serverName = { 'grpc.ssl_target_name_override': 'kv-worker' };
    expect(await healthCheck(workerAddress(), grpc.credentials.createInsecure()), 'plaintext').toBe(grpc.status.UNAVAILABLE);
    expect(await healthCheck(workerAddress(), grpc.credentials.createSsl(ca), serverName), 'no client certificate').toBe(grpc.status.UNAVAILABLE);
    const rogue = grpc.credentials.createSsl(ca, read(certs.rogueClient.key), read(certs.rogueClient.cert));
    expect(await healthCheck(workerAddress(), rogue, serverName), 'client certificate from another CA').toBe(grpc.status.UNAVAILABLE);
    // Signed by the internal CA but for serving only (no clientAuth): one worker cannot call another.
    expect(await asGateway({ internalTlsCert: certs.worker.cert, internalTlsKey: certs.worker.key }), 'a worker certificate').toBe(grpc.status.UNAVAILABLE);
  });

  it('is verified by the gateway side: a worker certificate from another CA or for another name is refused', async () => {
    expect(await asGateway({ internalTlsCa: certs.rogueCa })).toBe(grpc.status.UNAVAILABLE);
    expect(await asGateway({ internalTlsServerName: 'not-kv-worker' })).toBe(grpc.status.UNAVAILABLE);
  });
});
