// SIGTERM of the gateway or of a worker under load: calls in flight when the signal lands complete,
// calls that come after are refused cleanly (UNAVAILABLE, nothing stored), the process exits 0, and
// after a restart every acknowledged write is there. kill -9 of the gateway under load, then a
// restart: every acknowledged write is there too.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { grpc, kvClient } from './helpers/client.js';
import { TestCluster, waitFor } from './helpers/processes.js';
import { Verifier, reportFigures, type Outcome } from './helpers/verifier.js';

const MEMBERS = ['worker-0', 'worker-1', 'worker-2'];
let cluster: TestCluster;

beforeAll(async () => {
  cluster = await TestCluster.start({ workers: 3 });
});

afterAll(async () => {
  await cluster?.stop();
});

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

async function serving(address: string): Promise<void> {
  await waitFor('the store to serve again', async () => {
    const kv = kvClient(address, 2000);
    try {
      await kv.put('probe', 'x');
      return true;
    } finally {
      kv.close();
    }
  }, 20_000);
}

function codes(outcomes: Outcome[]): Record<string, number> {
  const out: Record<string, number> = {};
  for (const o of outcomes) {
    const c = o.code === 'ok' ? 'OK' : (grpc.status[o.code] ?? String(o.code));
    out[c] = (out[c] ?? 0) + 1;
  }
  return out;
}

/** Runs writes, applies `fault` mid-way, restarts what it stopped, and checks every key. */
async function underLoad(name: string, prefix: string, fault: () => Promise<{ at: number; exit: number | string; restart: () => Promise<unknown> }>): Promise<{
  inFlight: Outcome[];
  after: Outcome[];
  exit: number | string;
  verifier: Verifier;
}> {
  const keys = Array.from({ length: 300 }, (_, i) => `${prefix}/${i}`);
  const verifier = new Verifier(cluster.address, keys, MEMBERS, 8, 5_000);
  verifier.start(60_000);
  try {
    await sleep(600);
    const { at, exit, restart } = await fault();
    await sleep(300);
    await restart();
    await serving(cluster.address);
    await sleep(500);
    await verifier.stop();
    const inFlight = verifier.outcomes.filter((o) => o.at < at && o.at + o.ms > at);
    const after = verifier.outcomes.filter((o) => o.at >= at);
    const check = await verifier.check(cluster.address);
    reportFigures(name, {
      exitCode: exit,
      writesAttempted: verifier.outcomes.length,
      writesAcknowledged: verifier.acked,
      inFlightAtSignal: inFlight.length,
      inFlightCodes: codes(inFlight),
      afterSignalCodes: codes(after),
      keysChecked: check.keysChecked,
      writesLost: check.lost,
    });
    expect(check.problems).toEqual([]);
    expect(check.lost).toBe(0);
    return { inFlight, after, exit, verifier };
  } finally {
    await verifier.stop();
    verifier.close();
  }
}

describe('shutdown and crash under load', () => {
  it('SIGTERM of the gateway: in-flight calls complete, later ones are refused with UNAVAILABLE, exit 0', async () => {
    const r = await underLoad('gateway-sigterm', 'gwterm', async () => {
      const at = Date.now();
      const exit = await cluster.gateway.stop('SIGTERM');
      return { at, exit, restart: () => cluster.startGateway() };
    });
    expect(r.exit).toBe(0);
    for (const o of r.inFlight) expect(o.code, o.details).toBe('ok');
    for (const o of r.after) expect(['ok', grpc.status.UNAVAILABLE], o.details).toContain(o.code);
  });

  it('SIGTERM of a worker: its in-flight calls complete or are refused with UNAVAILABLE, exit 0, other workers unaffected', async () => {
    const victim = 'worker-2';
    const r = await underLoad('worker-sigterm', 'wkterm', async () => {
      const at = Date.now();
      const exit = await cluster.worker(victim).stop('SIGTERM');
      return { at, exit, restart: () => cluster.startWorker(victim) };
    });
    expect(r.exit).toBe(0);
    for (const o of [...r.inFlight, ...r.after]) {
      if (o.code === 'ok') continue;
      expect(o.owner).toBe(victim);
      expect(o.code, o.details).toBe(grpc.status.UNAVAILABLE);
      expect(o.details).toContain(victim);
    }
  });

  it('kill -9 of the gateway under load: restarted, it serves every acknowledged write', async () => {
    const r = await underLoad('gateway-kill-9', 'gwkill', async () => {
      const at = Date.now();
      cluster.gateway.kill('SIGKILL');
      const exit = await cluster.gateway.exited();
      return { at, exit, restart: () => cluster.startGateway() };
    });
    expect(r.exit).toBe('SIGKILL');
    for (const o of r.after) expect(['ok', grpc.status.UNAVAILABLE], o.details).toContain(o.code);
  });
});
