// `npm start` as a user runs it: the supervisor brings up a gateway and workers, and SIGINT / SIGTERM
// stops every one of them cleanly with exit code 0.
import { describe, expect, it } from 'vitest';
import { kvClient } from './helpers/client.js';
import { startEmbedded, waitFor } from './helpers/processes.js';

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

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
