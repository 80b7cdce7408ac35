// `kvctl backup` waits as long as a backup may take. With the general 10 s deadline of a point call,
// a big store's backup outlived kvctl: it exited 4 ("unreachable or too slow") while the gateway went
// on (each worker's snapshot may take KV_BACKUP_TIMEOUT_MS, 600 s) and the backup succeeded, and a
// retry was refused as "still running".
//
// The gateway here is a stand-in that answers Backup at once with the deadline the call arrived with
// (grpc-timeout), so the test reads kvctl's deadline without waiting it out. kvctl is the real one.
import { execFile } from 'node:child_process';
import * as grpc from '@grpc/grpc-js';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { publicApi } from '../shared/proto.js';
import { DEFAULTS } from '../shared/settings.js';
import { dist } from './helpers/processes.js';

let server: grpc.Server;
let address: string;

beforeAll(async () => {
  server = new grpc.Server();
  server.addService(publicApi().KeyValueStore.service, {
    Backup: (call: grpc.ServerUnaryCall<object, unknown>, cb: grpc.sendUnaryData<object>) => {
      const deadline = call.getDeadline();
      const ms = deadline instanceof Date ? deadline.getTime() - Date.now() : Number(deadline) - Date.now();
      cb(null, { success: true, message: 'ok', backup_id: 'b1', location: `deadline-ms=${Math.round(ms)}`, keys: 0, bytes: 0 });
    },
  });
  const port = await new Promise<number>((resolve, reject) =>
    server.bindAsync('127.0.0.1:0', grpc.ServerCredentials.createInsecure(), (err, p) => (err ? reject(err) : resolve(p))),
  );
  address = `127.0.0.1:${port}`;
});
afterAll(() => server?.forceShutdown());

/** Runs kvctl --json backup (asynchronously: the stand-in answers from this process) and returns the deadline it sent. */
function backupDeadline(args: string[], env: Record<string, string> = {}): Promise<number> {
  return new Promise((resolve, reject) => {
    execFile(process.execPath, [dist('cli/kvctl.js'), '--address', address, '--json', ...args, 'backup'], { env: { ...process.env, ...env }, timeout: 20_000 }, (err, stdout, stderr) => {
      if (err) return reject(new Error(`kvctl failed: ${err.message}\n${stderr}`));
      const m = /deadline-ms=(\d+)/.exec(stdout);
      if (!m) return reject(new Error(`no deadline in ${stdout}`));
      resolve(Number(m[1]));
    });
  });
}

describe('kvctl backup', () => {
  it('waits as long as the gateway may spend on the snapshots, not the 10 s of a point call', async () => {
    const ms = await backupDeadline([]);
    expect(ms).toBeGreaterThan(DEFAULTS.backupTimeoutMs);
  });

  it('keeps an explicit --timeout or KV_TIMEOUT_MS', async () => {
    const flag = await backupDeadline(['--timeout', '4000']);
    expect(flag).toBeGreaterThan(2000);
    expect(flag).toBeLessThanOrEqual(4000);
    const env = await backupDeadline([], { KV_TIMEOUT_MS: '5000' });
    expect(env).toBeGreaterThan(3000);
    expect(env).toBeLessThanOrEqual(5000);
  });
});
