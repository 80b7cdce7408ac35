// Secrets never appear in logs or metrics: the embedded store (`npm start`) runs with TLS everywhere
// and an admin token, at the most verbose log level, through traffic, refused connections and a
// worker restart; then every line it printed and every /metrics page is searched for the token and
// for any piece of any private key.
import { readFileSync } from 'node:fs';
import * as grpc from '@grpc/grpc-js';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { adminMetadata } from '../shared/auth.js';
import { adminApi } from '../shared/proto.js';
import { clientCredentials, publicServerTls, workerServerTls } from '../shared/tls.js';
import { codeOf, kvClient } from './helpers/client.js';
import { makeTestCerts, type TestCerts } from './helpers/certs.js';
import { startEmbedded, waitFor, type EmbeddedStore } from './helpers/processes.js';

const TOKEN = 'f0e1d2c3b4a5968778695a4b3c2d1e0f-admin-secret';
let certs: TestCerts;
let store: EmbeddedStore;

/** Every base64 line of every private key: finding any one of them in output is a leak. */
function keyFragments(): string[] {
  return certs.privateKeys().flatMap((pem) => pem.split('\n').filter((l) => l.length >= 20 && !l.startsWith('-----')));
}

function expectNoSecret(text: string, where: string): void {
  expect(text.includes(TOKEN), `admin token in ${where}`).toBe(false);
  expect(text.includes('PRIVATE KEY'), `PEM private key header in ${where}`).toBe(false);
  for (const fragment of keyFragments()) expect(text.includes(fragment), `private key material in ${where}`).toBe(false);
}

beforeAll(async () => {
  certs = makeTestCerts();
  store = await startEmbedded(
    [
      '--workers', '2',
      '--tls-cert', certs.gateway.cert, '--tls-key', certs.gateway.key, '--tls-client-ca', certs.publicCa,
      '--internal-tls-ca', certs.internalCa, '--internal-tls-cert', certs.embeddedInternal.cert, '--internal-tls-key', certs.embeddedInternal.key,
      '--internal-tls-server-name', 'localhost',
    ],
    undefined,
    { KV_LOG_LEVEL: 'trace', KV_ADMIN_TOKEN: TOKEN },
  );
});

afterAll(async () => {
  await store?.stop();
  certs?.remove();
});

describe('secrets in logs and metrics', () => {
  it('the embedded store passes TLS settings through and never prints the token or a key', async () => {
    const creds = clientCredentials({ ca: certs.publicCa, cert: certs.client.cert, key: certs.client.key });
    const kv = kvClient(store.address, 10_000, creds);
    try {
      for (let i = 0; i < 20; i++) await kv.put(`secret-test/${i}`, 'v');
      expect((await kv.list()).length).toBeGreaterThanOrEqual(20);
      expect((await kv.backup()).success).toBe(true);
      // A token sent where it does not belong, and a call that fails and is logged.
      await new Promise<void>((resolve) => {
        (kv.raw as unknown as { Get(r: object, m: grpc.Metadata, cb: () => void): void }).Get({ key: 'secret-test/0' }, adminMetadata(TOKEN), () => resolve());
      });
      expect(await codeOf(kv.put('x'.repeat(200), 'v'))).toBe(grpc.status.INVALID_ARGUMENT);
    } finally {
      kv.close();
    }
    // Admin calls with the right token and with near misses (refusals are logged by the admin service).
    const Admin = adminApi().Admin;
    const admin = new Admin(store.address, creds) as unknown as { Status(r: object, m: grpc.Metadata, cb: (e: grpc.ServiceError | null) => void): void; close(): void };
    const status = (md: grpc.Metadata): Promise<number | 'ok'> => new Promise((resolve) => admin.Status({}, md, (e) => resolve(e ? e.code : 'ok')));
    expect(await status(adminMetadata(TOKEN))).toBe('ok');
    expect(await status(adminMetadata(`${TOKEN}0`))).toBe(grpc.status.UNAUTHENTICATED);
    expect(await status(adminMetadata(TOKEN.slice(1)))).toBe(grpc.status.UNAUTHENTICATED);
    admin.close();
    const plain = kvClient(store.address, 2_000);
    expect(await codeOf(plain.put('secret-test/plain', 'v'))).toBe(grpc.status.UNAVAILABLE);
    plain.close();

    // A worker crash and restart logs the supervisor's restart path and the worker's startup again.
    const [victim, pid] = [...store.workerPids.entries()][0];
    process.kill(pid, 'SIGKILL');
    await waitFor('the worker to be restarted', async () => store.workerPids.get(victim) !== pid, 20_000);

    // The token is the gateway's alone: no worker, restarted ones included, inherits a copy of it.
    const environ = (pid: number): string => readFileSync(`/proc/${pid}/environ`, 'latin1');
    expect(environ(store.proc.pid)).toContain(`KV_ADMIN_TOKEN=${TOKEN}`);
    for (const [name, pid] of store.workerPids) expect(environ(pid), name).not.toContain(TOKEN);

    const output = store.proc.output.join('');
    // The scan saw real startup lines, with the security modes but not their secrets.
    expect(output).toContain('"msg":"gateway listening"');
    expect(output).toMatch(/"tls":\{"mode":"mtls"/);
    expect(output).toContain('"adminAuth":"token"');
    expectNoSecret(output, 'process output');

    const ready = output.split('\n').map((l) => { try { return JSON.parse(l) as { msg?: string; metricsPort?: number; workers?: Array<{ metricsPort: number }> }; } catch { return {}; } })
      .find((r) => r.msg?.startsWith('kvstore ready'));
    const metricsPorts = [ready!.metricsPort!, ...ready!.workers!.map((w) => w.metricsPort)];
    for (const port of metricsPorts) {
      const text = await (await fetch(`http://127.0.0.1:${port}/metrics`)).text();
      expect(text).toContain('process_cpu');
      expectNoSecret(text, `/metrics on port ${port}`);
    }
  });

  it('a wrong key file stops startup with a message that names the file and quotes none of it', () => {
    const attempts = [
      () => publicServerTls({ tlsCert: certs.gateway.cert, tlsKey: certs.client.key }),
      () => publicServerTls({ tlsCert: certs.gateway.cert, tlsKey: certs.gateway.cert }),
      () => workerServerTls({ internalTlsCa: certs.internalCa, internalTlsCert: certs.worker.cert, internalTlsKey: certs.gatewayInternal.key }),
    ];
    for (const attempt of attempts) {
      let message = '';
      try {
        attempt();
      } catch (err) {
        message = (err as Error).message;
      }
      expect(message).toMatch(/KV_(TLS|INTERNAL_TLS)_KEY: .*\.(key|crt) is not/);
      expectNoSecret(message, 'the error');
    }
    expect(() => publicServerTls({ tlsCert: certs.gateway.cert })).toThrow(/needs KV_TLS_KEY/);
    expect(readFileSync(certs.gateway.key, 'utf8')).toContain('PRIVATE KEY'); // the check above can see a leak
  });
});
