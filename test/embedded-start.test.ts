// `npm start` as a user runs it: the supervisor brings up a gateway and workers, and SIGINT / SIGTERM
// stops every one of them cleanly with exit code 0. A bad flag or KV_* value is a one-line usage error.
import { spawnSync } from 'node:child_process';
import { describe, expect, it } from 'vitest';
import { kvClient } from './helpers/client.js';
import { dist, startEmbedded, waitFor } from './helpers/processes.js';

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

describe('server command lines', () => {
  it('refuse a bad number or port in one line naming the flag or env var, exit 1, and start nothing', () => {
    for (const [script, args, env, says] of [
      ['cli/start.js', ['--workers', 'x'], {}, /option '--workers <n>' argument 'x' is invalid\. expected a non-negative integer/],
      ['gateway/main.js', ['--port', '50o51'], {}, /option '--port <port>' argument '50o51' is invalid/],
      ['worker/main.js', ['--name', 'w', '--port', '70000'], {}, /option '--port <port>' argument '70000' is invalid\. expected 0 to 65535/],
      ['cli/start.js', [], { KV_WORKERS: '0' }, /value '0' from env 'KV_WORKERS' is invalid\. expected 1 to 64/],
      ['cli/start.js', [], { KV_PORT: '99999' }, /value '99999' from env 'KV_PORT' is invalid/],
    ] as const) {
      const r = spawnSync(process.execPath, [dist(script), ...args], { env: { ...process.env, ...env }, encoding: 'utf8', timeout: 15_000 });
      const what = `${script} ${args.join(' ')} ${JSON.stringify(env)}`;
      expect(r.status, what).toBe(1);
      expect(r.stderr, what).toMatch(says);
      expect(r.stderr, what).not.toMatch(/\n\s+at /); // no stack trace
    }
  });
});

describe('embedded store', () => {
  it.each(['SIGINT', 'SIGTERM'] as const)('serves with KV_WORKERS workers and stops everything on %s with exit 0', async (signal) => {
    const store = await startEmbedded(['--workers', '2']);
    try {
      expect([...store.workerPids.keys()].sort()).toEqual(['worker-0', 'worker-1']);
      const kv = kvClient(store.address);
      await kv.put('hello', 'world');
      expect(await kv.get('hello')).toBe('world');
      kv.close();
      const pids = [...store.workerPids.values()];
      expect(await store.proc.stop(signal)).toBe(0);
      await waitFor('every worker to exit', async () => pids.every((p) => !alive(p)), 10_000);
    } finally {
      await store.stop();
    }
  });
});
