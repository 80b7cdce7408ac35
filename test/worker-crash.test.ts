// kill -9 of one worker under the embedded supervisor: only its keys fail, with UNAVAILABLE naming it;
// once the supervisor has restarted it, every acknowledged write is there. The second test repeats the
// kill under continuous writes from a verifying client (one writer per key) and checks every key.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Ring } from '../shared/ring.js';
import { errorOf, grpc, kvClient, type KvClient } from './helpers/client.js';
import { startEmbedded, waitFor, type EmbeddedStore } from './helpers/processes.js';
import { Verifier, reportFigures } from './helpers/verifier.js';

let store: EmbeddedStore;
let kv: KvClient;
const ring = new Ring(['worker-0', 'worker-1', 'worker-2']);

beforeAll(async () => {
  store = await startEmbedded(['--workers', '3']);
  kv = kvClient(store.address, 20_000);
});

afterAll(async () => {
  kv?.close();
  await store?.stop();
});

describe('worker crash', () => {
  it('fails only the dead worker\'s keys, then serves every acknowledged write after the restart', async () => {
    const acked = new Map<string, string>();
    const keys = Array.from({ length: 600 }, (_, i) => `crash/${i}`);
    for (let i = 0; i < keys.length; i += 150) {
      await Promise.all(
        keys.slice(i, i + 150).map(async (k) => {
          await kv.put(k, `v1:${k}`);
          acked.set(k, `v1:${k}`);
        }),
      );
    }

    const victim = 'worker-1';
    const pid = store.workerPids.get(victim)!;
    process.kill(pid, 'SIGKILL');
    const probe = keys.find((k) => ring.owner(k) === victim)!;
    await waitFor('UNAVAILABLE naming the dead worker', async () => {
      const err = await errorOf(kv.get(probe));
      return err.code === grpc.status.UNAVAILABLE && err.details.includes(victim);
    });

    // While it is down: its keys fail with UNAVAILABLE naming it; every other key reads and writes.
    const victimKeys = keys.filter((k) => ring.owner(k) === victim).slice(0, 20);
    const otherKeys = keys.filter((k) => ring.owner(k) !== victim);
    for (const k of victimKeys) {
      const err = await errorOf(kv.get(k));
      if (store.workerPids.get(victim) !== pid) break; // already restarted: the rest is checked below
      expect(err.code).toBe(grpc.status.UNAVAILABLE);
      expect(err.details).toContain(victim);
    }
    for (const k of otherKeys) {
      await kv.put(k, `v2:${k}`);
      acked.set(k, `v2:${k}`);
    }

    await waitFor('the supervisor to restart the worker', async () => store.workerPids.get(victim) !== pid, 20_000);
    await waitFor('the restarted worker to serve', async () => (await kv.get(victimKeys[0])) === acked.get(victimKeys[0]), 20_000);
    for (const [k, v] of acked) expect(await kv.get(k)).toBe(v);
    expect((await kv.list()).filter((k) => k.startsWith('crash/'))).toHaveLength(keys.length);
  });

  it('loses no acknowledged write over repeated kill -9 of workers under continuous writes', async () => {
    const members = ['worker-0', 'worker-1', 'worker-2'];
    const keys = Array.from({ length: 300 }, (_, i) => `churn/${i}`);
    const verifier = new Verifier(store.address, keys, members, 6, 5_000);
    const victims = ['worker-0', 'worker-2', 'worker-0'];
    const windows: { victim: string; from: number; to: number }[] = [];
    const okAfter = (owner: string, t: number): boolean => verifier.outcomes.some((o) => o.owner === owner && o.code === 'ok' && o.at >= t);
    verifier.start(90_000);
    try {
      for (const victim of victims) {
        const settled = Date.now();
        await waitFor('writes to every worker', async () => members.every((m) => okAfter(m, settled)), 20_000);
        const pid = store.workerPids.get(victim)!;
        const from = Date.now();
        process.kill(pid, 'SIGKILL');
        await waitFor(`the supervisor to restart ${victim}`, async () => store.workerPids.get(victim) !== pid, 20_000);
        const restarted = Date.now();
        await waitFor(`${victim} to serve again`, async () => okAfter(victim, restarted), 20_000);
        windows.push({ victim, from, to: Date.now() });
      }
    } finally {
      await verifier.stop();
      verifier.close();
    }

    // Every failure belongs to the worker that was down at that moment, is UNAVAILABLE, and names it.
    const failures = verifier.failures();
    const stray = failures.filter((f) => {
      const end = f.at + f.ms;
      return !windows.some((w) => w.victim === f.owner && end >= w.from && f.at <= w.to);
    });
    expect(stray.map((f) => `${f.owner} ${f.code} ${f.details}`)).toEqual([]);
    for (const f of failures) {
      expect(f.code, f.details).toBe(grpc.status.UNAVAILABLE);
      expect(f.details).toContain(f.owner);
    }
    expect(failures.length).toBeGreaterThan(0);

    const check = await verifier.check(store.address);
    expect(check.problems).toEqual([]);
    expect(check.lost).toBe(0);
    reportFigures('worker-kill-9-repeated', {
      kills: victims.length,
      writesAttempted: verifier.outcomes.length,
      writesAcknowledged: verifier.acked,
      writesFailedUnavailable: failures.length,
      failuresOnLiveWorkers: stray.length,
      keysChecked: check.keysChecked,
      writesLost: check.lost,
      downWindowsMs: windows.map((w) => w.to - w.from),
    });
  });
});
