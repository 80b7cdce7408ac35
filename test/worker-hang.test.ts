// A hung worker (SIGSTOP): its keys fail within the configured deadline with DEADLINE_EXCEEDED or
// UNAVAILABLE, every other key keeps working at its usual latency, the gateway's memory stays bounded
// while a flood waits on the hung worker, and after SIGCONT the worker serves again with nothing lost.
// Latency is reported against a baseline measured in the same run, and only compared with a generous
// factor: the machine is shared.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Ring } from '../shared/ring.js';
import { grpc } from './helpers/client.js';
import { TestCluster, waitFor } from './helpers/processes.js';
import { MiB, Verifier, flood, percentile, reportFigures, sampleRss, type Outcome } from './helpers/verifier.js';

const TIMEOUT_MS = 1000;
const MAX_INFLIGHT = 300;
const MEMBERS = ['worker-0', 'worker-1', 'worker-2'];
const VICTIM = 'worker-1';

let cluster: TestCluster;

beforeAll(async () => {
  cluster = await TestCluster.start({ workers: 3, gatewayArgs: ['--request-timeout-ms', String(TIMEOUT_MS), '--max-inflight', String(MAX_INFLIGHT)] });
});

afterAll(async () => {
  await cluster?.stop();
});

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));
const between = (outcomes: Outcome[], from: number, to: number): Outcome[] => outcomes.filter((o) => o.at >= from && o.at + o.ms <= to);
const latencies = (outcomes: Outcome[], pick: (o: Outcome) => boolean): number[] => outcomes.filter((o) => o.code === 'ok' && pick(o)).map((o) => o.ms);
const round = (n: number): number => Math.round(n * 100) / 100;

describe('hung worker', () => {
  it('fails only its keys within the deadline, keeps other keys fast and gateway memory bounded, and recovers on SIGCONT', async () => {
    // Two verifying clients: the hung worker's keys block their writer for a whole deadline each, so
    // other keys get writers of their own and their latency is measured unhindered.
    const keys = Array.from({ length: 450 }, (_, i) => `hang/${i}`);
    const owned = new Ring(MEMBERS);
    const verifier = new Verifier(cluster.address, keys.filter((k) => owned.owner(k) !== VICTIM), MEMBERS, 4, 10_000);
    const victimVerifier = new Verifier(cluster.address, keys.filter((k) => owned.owner(k) === VICTIM), MEMBERS, 4, 10_000);
    const victimKeys = Array.from({ length: 2000 }, (_, i) => `flood/${i}`).filter((k) => verifier.ring.owner(k) === VICTIM);
    const worker = cluster.worker(VICTIM);
    const gatewayPid = cluster.gateway.pid;
    let stopped = false;
    verifier.start(60_000);
    victimVerifier.start(60_000);
    try {
      await sleep(1500);
      const baselineEnd = Date.now();
      const rssBefore = sampleRss(gatewayPid).stop().at(-1)!;

      worker.kill('SIGSTOP');
      stopped = true;
      const hangStart = Date.now();
      await sleep(2000);
      const quietEnd = Date.now();
      // A flood of 2 KB writes at the hung worker, more than the in-flight bound, while RSS is sampled.
      const rss = sampleRss(gatewayPid);
      const flooded = await flood(cluster.address, victimKeys, 2048, 1000, 2500, 10_000);
      const rssSamples = rss.stop();
      const hangEnd = Date.now();

      worker.kill('SIGCONT');
      stopped = false;
      await waitFor(`${VICTIM} to serve after SIGCONT`, async () => victimVerifier.outcomes.some((o) => o.owner === VICTIM && o.code === 'ok' && o.at > hangEnd), 20_000);
      const recovered = Date.now() - hangEnd;
      await sleep(500);
      await Promise.all([verifier.stop(), victimVerifier.stop()]);

      const all = [...verifier.outcomes, ...victimVerifier.outcomes];
      const baseline = latencies(between(all, 0, baselineEnd), () => true);
      const othersHung = latencies(between(all, hangStart, quietEnd), (o) => o.owner !== VICTIM);
      const othersFlood = latencies(between(all, quietEnd, hangEnd), (o) => o.owner !== VICTIM);
      const victimFailures = between(all, hangStart, hangEnd + 2 * TIMEOUT_MS).filter((o) => o.owner === VICTIM && o.code !== 'ok');
      const otherFailures = all.filter((o) => o.owner !== VICTIM && o.code !== 'ok');

      const check = await verifier.check(cluster.address);
      const victimCheck = await victimVerifier.check(cluster.address);
      const slowestFailure = Math.max(...victimFailures.map((f) => f.ms));
      const slowestQuietFailure = Math.max(...victimFailures.filter((f) => f.at + f.ms <= quietEnd).map((f) => f.ms));
      const rssPeak = Math.max(...rssSamples);
      const RSS_BOUND = 256 * MiB;
      reportFigures('worker-hang', {
        timeoutMs: TIMEOUT_MS,
        maxInflight: MAX_INFLIGHT,
        hungMs: hangEnd - hangStart,
        victimFailures: victimFailures.length,
        victimFailureCodes: Object.fromEntries([...new Set(victimFailures.map((f) => f.code))].map((c) => [grpc.status[c as number], victimFailures.filter((f) => f.code === c).length])),
        slowestVictimFailureMs: Math.round(slowestFailure),
        slowestVictimFailureBeforeFloodMs: Math.round(slowestQuietFailure),
        otherKeysFailures: otherFailures.length,
        baselineP50Ms: round(percentile(baseline, 50)),
        baselineP99Ms: round(percentile(baseline, 99)),
        otherKeysWhileHungP50Ms: round(percentile(othersHung, 50)),
        otherKeysWhileHungP99Ms: round(percentile(othersHung, 99)),
        otherKeysDuringFloodP50Ms: round(percentile(othersFlood, 50)),
        otherKeysDuringFloodP99Ms: round(percentile(othersFlood, 99)),
        floodCalls: flooded.calls,
        floodCodes: flooded.codes,
        floodSlowestMs: flooded.maxMs,
        floodDetails: flooded.details,
        gatewayRssBeforeMiB: round(rssBefore / MiB),
        gatewayRssPeakWhileHungMiB: round(rssPeak / MiB),
        gatewayRssBoundMiB: RSS_BOUND / MiB,
        recoveredAfterSigcontMs: recovered,
        writesAcknowledged: verifier.acked + victimVerifier.acked,
        keysChecked: check.keysChecked + victimCheck.keysChecked,
        writesLost: check.lost + victimCheck.lost,
      });
      if (otherFailures.length > 0 || flooded.codes.INTERNAL) console.log(cluster.gateway.output.join('').slice(0, 3000));
      // The hung worker's keys fail, within the deadline plus the sweep tick and a shared machine's slack.
      expect(victimFailures.length).toBeGreaterThan(0);
      for (const f of victimFailures) {
        // RESOURCE_EXHAUSTED too once the flood fills the in-flight bound: refused at once.
        expect([grpc.status.DEADLINE_EXCEEDED, grpc.status.UNAVAILABLE, grpc.status.RESOURCE_EXHAUSTED], f.details).toContain(f.code);
        expect(f.details).toContain(VICTIM);
      }
      expect(slowestQuietFailure).toBeLessThan(TIMEOUT_MS + 3000);
      // Every other key keeps working, at a latency of the same order as before the hang.
      expect(otherFailures.map((o) => `${o.owner} ${o.code} ${o.details}`)).toEqual([]);
      // A loaded shared machine can be slow: only a few answers and a generous factor are required.
      expect(othersHung.length).toBeGreaterThan(20);
      expect(percentile(othersHung, 50)).toBeLessThan(10 * percentile(baseline, 50) + 100);
      // Beyond the in-flight bound the flood is refused at once rather than queued.
      expect(flooded.codes.RESOURCE_EXHAUSTED ?? 0).toBeGreaterThan(0);
      expect(flooded.codes.OK ?? 0).toBe(0);
      expect(rssPeak).toBeLessThan(RSS_BOUND);

      expect([...check.problems, ...victimCheck.problems]).toEqual([]);
      expect(check.lost + victimCheck.lost).toBe(0);
    } finally {
      if (stopped) worker.kill('SIGCONT');
      await Promise.all([verifier.stop(), victimVerifier.stop()]);
      verifier.close();
      victimVerifier.close();
    }
  });
});
