// On/off settings read from the environment mean what they say: commander alone took any value of
// a flag's env var as "on", so KV_DIRECT_API=false turned the worker's direct API on.
import { spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { status, type ServiceError } from '@grpc/grpc-js';
import { afterAll, describe, expect, it } from 'vitest';
import { kvClient } from './helpers/client.js';
import { Proc, dist } from './helpers/processes.js';

const dir = mkdtempSync(join(tmpdir(), 'kvstore-switch-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

/** Starts a worker with `args` and `env`, and says whether it serves the public API itself. */
async function servesPublicApi(name: string, args: string[], env: Record<string, string>): Promise<boolean> {
  const worker = new Proc(dist('worker/main.js'), ['--name', name, '--host', '127.0.0.1', '--port', '0', '--metrics-port', '0', '--data-dir', dir, ...args], env);
  try {
    const l = await worker.start();
    const kv = kvClient(`127.0.0.1:${l.port}`, 5000);
    try {
      await kv.get('k');
      return true;
    } catch (err) {
      const code = (err as ServiceError).code;
      if (code === status.NOT_FOUND) return true;
      expect(code, String(err)).toBe(status.UNIMPLEMENTED);
      return false;
    } finally {
      kv.close();
    }
  } finally {
    await worker.stop();
  }
}

describe('KV_DIRECT_API', () => {
  it.each([
    ['', false],
    ['false', false],
    ['0', false],
    ['off', false],
    ['true', true],
    ['YES', true],
  ] as const)('KV_DIRECT_API=%s: serves the public API: %s', async (value, on) => {
    expect(await servesPublicApi(`w-${value.toLowerCase() || 'empty'}`, [], { KV_DIRECT_API: value })).toBe(on);
  });

  it('the flag on the command line wins over the env var', async () => {
    expect(await servesPublicApi('w-flag', ['--direct-api'], { KV_DIRECT_API: 'false' })).toBe(true);
  });

  it('any other value is refused in one line naming the variable, exit 1', () => {
    const r = spawnSync(process.execPath, [dist('worker/main.js'), '--name', 'w', '--port', '0', '--data-dir', dir], {
      env: { ...process.env, KV_DIRECT_API: 'maybe' },
      encoding: 'utf8',
      timeout: 15_000,
    });
    expect(r.status).toBe(1);
    expect(r.stderr).toMatch(/option '--direct-api' value 'maybe' from env 'KV_DIRECT_API' is invalid\. expected true\/false, 1\/0, yes\/no or on\/off/);
    expect(r.stderr).not.toMatch(/\n\s+at /);
  });
});
