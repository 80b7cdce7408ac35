// Put, Get and Delete are linearizable through two gateways while the membership changes and workers
// fail: ten clients write and read the same eight keys (every client every key), and the whole
// history is checked against a single register per key (test/helpers/linearizability.ts). Meanwhile a
// worker is added (keys move to it), the owner of some keys hangs past the deadlines and resumes, an
// owner is SIGKILLed and restarted, and the added worker is removed again (keys move back). A write
// that failed may land late or never; everything answered must fit one order that respects real time.
import { performance } from 'node:perf_hooks';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Ring } from '../shared/ring.js';
import { admin, waitStable } from './helpers/admin.js';
import { kvClient, putFiller } from './helpers/client.js';
import { HistoryRecorder } from './helpers/history.js';
import { checkHistory } from './helpers/linearizability.js';
import { TestCluster, waitFor, type Proc } from './helpers/processes.js';
import { reportFigures } from './helpers/verifier.js';

const THREE = ['worker-0', 'worker-1', 'worker-2'];
const FOUR = [...THREE, 'worker-3'];

/** Three keys that move to `joiner` when it joins `members`, and five or more that stay, on three workers. */
function pickKeys(prefix: string, members: string[], joiner: string): { moving: string[]; staying: string[] } {
  const before = new Ring(members);
  const after = new Ring([...members, joiner]);
  const moving: string[] = [];
  const staying: string[] = [];
  for (let i = 0; moving.length < 3 || staying.length < 5 || new Set(staying.map((k) => before.owner(k))).size < 3; i++) {
    const key = `${prefix}/${i}`;
    if (after.owner(key) !== before.owner(key)) {
      if (moving.length < 3) moving.push(key);
    } else if (staying.length < 5 || !staying.some((k) => before.owner(k) === before.owner(key))) {
      staying.push(key);
    }
  }
  return { moving, staying };
}

const pause = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** Starts a worker and adds it through the gateway at `via`; resolves once the change is accepted. */
async function startJoin(name: string, via: string): Promise<void> {
  const w = await cluster.startWorker(name);
  const a = admin(via);
  await a.add([{ name, address: `127.0.0.1:${w.listening!.port}` }]);
  a.close();
}

/** startJoin, then wait until the keys have moved. */
async function join(name: string, via: string): Promise<void> {
  await startJoin(name, via);
  await waitStable(via, 90_000);
}

/**
 * Stops the clients, reads every key once more, checks every key's history and reports it.
 * `lastFaultAt`: when the scenario's last fault began (performance.now()); the clients must still
 * have been running then, or that fault was not tested (they stop after 120 s or 5,000 calls each).
 */
async function judge(name: string, history: HistoryRecorder, lastFaultAt: number): Promise<void> {
  const stats = await history.stop();
  await history.readAll();
  history.close();
  const verdicts = checkHistory(history.byKey);
  const checked = [...verdicts.values()];
  reportFigures(name, {
    ...stats,
    keys: history.keys.length,
    callsChecked: checked.reduce((n, v) => n + v.ops, 0),
    statesExplored: checked.reduce((n, v) => n + v.explored, 0),
    notLinearizable: checked.filter((v) => !v.ok).length,
  });
  for (const [key, v] of verdicts) {
    expect(v.inconclusive, `${key}: the search ran out of budget`).toBe(false);
    expect(v.ok, `${key} is not linearizable: ${v.detail}`).toBe(true);
  }
  // Not a vacuous pass: every key saw real contention, and the faults left writes in doubt.
  for (const [key, ops] of history.byKey) {
    const answeredPuts = ops.filter((o) => o.kind === 'put' && o.ret !== Infinity).length;
    const answeredGets = ops.filter((o) => o.kind === 'get' && o.ret !== Infinity).length;
    // Low enough for a machine a few times slower than this one (150-190 Puts a key at load 9).
    expect(answeredPuts, `answered Puts of ${key}`).toBeGreaterThan(20);
    expect(answeredGets, `answered Gets of ${key}`).toBeGreaterThan(20);
    expect(new Set(ops.map((o) => o.client)).size, `clients of ${key}`).toBeGreaterThanOrEqual(10);
  }
  expect(stats.unknownWrites).toBeGreaterThan(0);
  const answeredAfter = [...history.byKey.values()].flat().filter((o) => o.client !== 'final' && o.ret !== Infinity && o.call >= lastFaultAt).length;
  expect(answeredAfter, 'calls answered after the last fault began').toBeGreaterThan(10);
}

let cluster: TestCluster;
let secondAddress = '';
let stopped: Proc | undefined;

beforeAll(async () => {
  // A slow mover, so that keys are still moving while the clients run.
  cluster = await TestCluster.start({ workers: 3, gatewayArgs: ['--migration-rate', '400', '--request-timeout-ms', '800'] });
  ({ address: secondAddress } = await cluster.startExtraGateway());
  // Keys for the mover to carry, so that a migration lasts a few seconds.
  const filler = kvClient(cluster.address, 10_000);
  await putFiller(filler, 3000, 300);
  filler.close();
}, 60_000);

/** The workers on the ring now (each test starts from where the one before left the cluster). */
async function ringMembers(): Promise<string[]> {
  const a = admin(cluster.address);
  const s = await a.status();
  a.close();
  return s.members.map((m) => m.name);
}

afterAll(async () => {
  stopped?.kill('SIGCONT');
  await cluster?.stop();
});

describe('linearizability', () => {
  it('holds for Put, Get and Delete on shared keys through two gateways, across joins, hangs, crashes and leaves', async () => {
    expect(await ringMembers()).toEqual(THREE);
    const { moving, staying } = pickKeys('lin', THREE, 'worker-3');
    const keys = [...moving, ...staying];
    const ring = new Ring(THREE);

    const history = new HistoryRecorder([cluster.address, secondAddress], keys, 1000);
    history.start(10, 120_000);
    await pause(1500);

    // A worker joins through the second gateway; the first learns of it from the workers.
    await join('worker-3', secondAddress);
    await pause(500);

    // The owner of a staying key hangs for twice the client deadline, then resumes: what waited in
    // its buffers is applied late, after its callers gave up.
    stopped = cluster.worker(ring.owner(staying[0]));
    stopped.kill('SIGSTOP');
    await pause(2000);
    stopped.kill('SIGCONT');
    stopped = undefined;
    await pause(1000);

    // Another owner dies without warning and comes back on the same port and file.
    const victim = THREE.find((w) => w !== ring.owner(staying[0]))!;
    cluster.worker(victim).kill('SIGKILL');
    await cluster.worker(victim).exited();
    await pause(300);
    await cluster.startWorker(victim);
    const four = new Ring(FOUR);
    let probeKey = 'probe/0';
    for (let i = 1; four.owner(probeKey) !== victim; i++) probeKey = `probe/${i}`;
    const probe = kvClient(cluster.address, 1000);
    await waitFor(`${victim} to answer again`, async () => (await probe.put(probeKey, 'x')) !== undefined, 20_000, 100);
    probe.close();

    // The added worker leaves through the first gateway; its keys move back.
    const lastFaultAt = performance.now();
    const a1 = admin(cluster.address);
    await a1.remove(['worker-3']);
    a1.close();
    await waitStable(cluster.address, 90_000);
    await pause(500);

    await judge('linearizable', history, lastFaultAt);
  }, 300_000);

  it('holds when a gateway sleeps through a whole migration and wakes with calls routed by the old ring', async () => {
    const { moving, staying } = pickKeys('lin2', await ringMembers(), 'worker-4');
    const history = new HistoryRecorder([cluster.address, secondAddress], [...moving, ...staying], 1000);
    history.start(10, 120_000);
    await pause(1000);

    // The first gateway freezes with calls in its buffers, routed by the three-worker ring.
    stopped = cluster.gateway;
    stopped.kill('SIGSTOP');
    await pause(300);
    await join('worker-4', secondAddress);
    // It wakes after the keys have moved: the workers must refuse what it sends by the old ring
    // until it has caught up.
    const lastFaultAt = performance.now();
    stopped.kill('SIGCONT');
    stopped = undefined;
    await pause(2500);

    await judge('linearizable-stale-gateway', history, lastFaultAt);
  }, 300_000);

  it('holds when the gateway moving the keys and a source worker are SIGKILLed mid-migration', async () => {
    const members = await ringMembers();
    const { moving, staying } = pickKeys('lin3', members, 'worker-5');
    const history = new HistoryRecorder([cluster.address, secondAddress], [...moving, ...staying], 1000);
    history.start(10, 120_000);
    await pause(1000);

    // The first gateway, which made the change, dies mid-migration together with the old owner of a
    // moving key; restarted, the gateway learns the migration from the workers and resumes it. Both
    // die as soon as keys move: the other gateway's mover carries on, and a migration of a few
    // hundred keys at 400 a second is over before a gateway restarts on a loaded machine.
    await startJoin('worker-5', cluster.address);
    const a1 = admin(cluster.address);
    // Counted on worker-5 itself: the gateway's keys_moved counts only the copies its own mover made
    // first (the other gateway's mover races it), and never resets between migrations.
    const { epoch: migrating } = await waitFor('keys to reach worker-5', async () => {
      const s = await a1.status();
      return (s.workers.find((w) => w.name === 'worker-5')?.keys ?? 0) > 20 ? s : undefined;
    }, 30_000, 50);
    a1.close();
    const sourceName = new Ring(members).owner(moving[0]);
    const lastFaultAt = performance.now();
    cluster.gateway.kill('SIGKILL');
    cluster.worker(sourceName).kill('SIGKILL');
    await Promise.all([cluster.gateway.exited(), cluster.worker(sourceName).exited()]);
    // Not vacuous: the migration had not ended (no worker is past its epoch), and cannot end while
    // the source is down.
    const a2 = admin(secondAddress);
    const epochs = (await a2.status()).workers.map((w) => w.epoch);
    a2.close();
    expect(Math.max(...epochs), 'the workers\' epochs when the gateway and the source died').toBe(migrating);
    await pause(300);
    await cluster.startGateway();
    await cluster.startWorker(sourceName);
    await waitStable(cluster.address, 90_000);
    await pause(1000);

    await judge('linearizable-kill-mid-migration', history, lastFaultAt);
  }, 300_000);
});
