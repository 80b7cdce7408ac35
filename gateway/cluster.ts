// The gateway's view of the workers: the versioned membership (shared/membership.ts), one link per
// worker taking part in it, and routing that stays correct while keys move between workers.
//
// During a migration every operation on a key whose owner changes visits its old owner first (a read)
// and its new owner second (the mover copies before it drops, so the key is always in one of the two
// places that order visits), and writes go only to the new owner. A delete leaves a tombstone on the
// new owner so the mover's older copy can never resurrect it, and the mover's copy never overwrites a
// newer write.
// Every request carries the gateway's epoch; a worker on another epoch refuses it, and the gateway
// refreshes its membership and retries.
import * as grpc from '@grpc/grpc-js';
import { KvError, statusName, unavailable } from '../shared/errors.js';
import { workerChannelOptions } from '../shared/grpc-options.js';
import type { Logger } from '../shared/logger.js';
import {
  Placement,
  decodeState,
  encodeState,
  leaderOf,
  participants,
  type MemberSpec,
  type MembershipState,
} from '../shared/membership.js';
import { OpType, workerApi, type OpResult, type OpTypeValue } from '../shared/proto.js';
import type { Ring } from '../shared/ring.js';
import { describeFailures, fanout, mergeSorted } from './fanout.js';
import type { GatewayMetrics } from './metrics.js';
import { WorkerLink, type LinkOptions } from './worker-link.js';
import { getMembership, scan, setMembership, workerStatus } from './worker-rpc.js';

export interface ClusterOptions {
  link: LinkOptions;
  /** Deadline of membership and status calls. */
  controlTimeoutMs: number;
}

type RouteDone = (err: unknown, r?: OpResult, worker?: string) => void;

export interface Routed {
  r: OpResult;
  worker: string;
}

const MAX_EPOCH_RETRIES = 3;
// How long a refresh waits for the channel of a worker that just refused an epoch: twice the
// channel's longest reconnect backoff (workerChannelOptions).
const READY_WAIT_MS = 2000;
const BOOTSTRAP_RETRY_MS = 500;

/**
 * A worker still refusing the epoch after every refresh (one that cannot be reached for the
 * membership, say, while it restarts mid-migration) is, to the client, a worker it cannot use now:
 * UNAVAILABLE, which it retries. FAILED_PRECONDITION is internal; the public contract does not list it.
 */
function stillRefused(r: OpResult, refreshes: number): OpResult {
  return {
    ...r,
    code: grpc.status.UNAVAILABLE,
    message: `${r.message}; still refused after ${refreshes} membership refreshes (a membership change or a worker restart is in progress), so the request was not applied: retry`,
  };
}

export class Cluster {
  private placement: Placement | undefined;
  private readonly links = new Map<string, WorkerLink>();
  private refreshing: Promise<void> | undefined;
  /** The worker the running refresh waits for (refresh's `refusedBy`), if any. */
  private refreshingFor: string | undefined;
  /** Workers that did not answer the last refresh's GetMembership. */
  private unanswered = new Set<string>();
  private closed = false;
  private readonly listeners: ((state: MembershipState) => void)[] = [];

  constructor(
    private readonly seeds: readonly MemberSpec[],
    private readonly options: ClusterOptions,
    private readonly log: Logger,
    private readonly metrics?: GatewayMetrics,
  ) {
    metrics?.setInflightSource(() => [...this.links].map(([name, link]) => [name, link.inflight]));
  }

  get ready(): boolean {
    return this.placement !== undefined;
  }

  get state(): MembershipState {
    return this.current().state;
  }

  get epoch(): number {
    return this.placement?.epoch ?? 0;
  }

  /** The ring keys belong to now (during a migration: the ring they move to). */
  get ring(): Ring {
    return this.current().ring;
  }

  get members(): MemberSpec[] {
    return this.current().state.members;
  }

  onStateChange(fn: (state: MembershipState) => void): void {
    this.listeners.push(fn);
  }

  private current(): Placement {
    if (!this.placement) throw new KvError(grpc.status.UNAVAILABLE, 'the gateway has not learned the cluster membership yet; retry shortly');
    return this.placement;
  }

  // ---- links ---------------------------------------------------------------------------------

  link(name: string): WorkerLink {
    const link = this.links.get(name);
    if (!link) throw unavailable(name, 'not a member of the cluster');
    return link;
  }

  /** Links of the workers on the current ring. */
  all(): WorkerLink[] {
    return this.current().state.members.map((m) => this.link(m.name));
  }

  /** Links of every worker taking part in the current state (both rings during a migration). */
  participants(): WorkerLink[] {
    return participants(this.current().state).map((m) => this.link(m.name));
  }

  private makeLink(m: MemberSpec): WorkerLink {
    const metrics = this.metrics;
    metrics?.addWorker(m.name);
    const up = metrics?.workerUp.labels(m.name);
    const errors = new Map<number, { inc(): void }>();
    const link: WorkerLink = new WorkerLink(m.name, m.address, { ...this.options.link, epoch: () => this.epoch }, {
      // One line per transition, not per failed request: while a worker is down, its requests fail
      // fast and are counted in kv_gateway_worker_errors_total instead of being logged one by one.
      onState: (isUp) => {
        // A link closed because its worker left the ring (or moved) reports the close too: that must
        // neither bring back the removed worker_up series as 0 (KvWorkerDown would fire for ever)
        // nor overwrite the new link's state, nor log a lost connection nobody needs to act on.
        if (this.links.get(m.name) !== link) return;
        up?.set(isUp ? 1 : 0);
        if (isUp) this.log.info({ worker: m.name, address: m.address }, 'worker connected');
        else this.log.warn({ worker: m.name, address: m.address }, 'worker connection lost');
      },
      onCallbackError: (err) => this.log.error({ worker: m.name, err }, 'a request callback threw'),
      onFailure: (code) => {
        if (!metrics) return;
        let c = errors.get(code);
        if (!c) {
          c = metrics.workerErrors.labels(m.name, statusName(code));
          errors.set(code, c);
        }
        c.inc();
      },
    });
    return link;
  }

  /** An address given at start-up (KV_MEMBERS) wins over a stored one: it is where the worker is now. */
  private withSeedAddresses(state: MembershipState): MembershipState {
    const seed = new Map(this.seeds.map((m) => [m.name, m.address]));
    const fix = (ms: MemberSpec[]): MemberSpec[] => ms.map((m) => ({ name: m.name, address: seed.get(m.name) ?? m.address }));
    return { epoch: state.epoch, members: fix(state.members), previous: state.previous ? fix(state.previous) : null };
  }

  private install(raw: MembershipState): void {
    const state = this.withSeedAddresses(raw);
    if (this.placement && state.epoch <= this.placement.epoch) return;
    const wanted = participants(state);
    for (const m of wanted) {
      const existing = this.links.get(m.name);
      if (existing && existing.address === m.address) continue;
      // Like a removed member's link: what was already sent there may still be applied, so it gets
      // its answer (or its deadline) rather than an immediate failure that could hide a stored write.
      void existing?.close(this.options.link.timeoutMs);
      this.links.set(m.name, this.makeLink(m));
    }
    const keep = new Set(wanted.map((m) => m.name));
    for (const [name, link] of this.links) {
      if (keep.has(name)) continue;
      this.links.delete(name);
      void link.close(this.options.link.timeoutMs);
      this.metrics?.workerUp.remove(name);
    }
    const previous = this.placement?.epoch ?? 0;
    this.placement = new Placement(state);
    if (this.metrics) {
      this.metrics.ringMembers.set(state.members.length);
      this.metrics.ringMember.reset();
      for (const m of state.members) this.metrics.ringMember.labels(m.name, m.address).set(1);
    }
    this.log.info({ from: previous, epoch: state.epoch, members: state.members.map((m) => m.name), migratingFrom: state.previous?.map((m) => m.name) ?? null }, 'membership installed');
    for (const fn of this.listeners) fn(state);
  }

  private withClient<T>(m: MemberSpec, fn: (c: grpc.Client) => Promise<T>): Promise<T> {
    const link = this.links.get(m.name);
    if (link && link.address === m.address) return fn(link.client);
    const Ctor = workerApi().Worker;
    const client = new Ctor(m.address, this.options.link.credentials ?? grpc.credentials.createInsecure(), { ...workerChannelOptions, ...this.options.link.channelOptions });
    return fn(client).finally(() => client.close());
  }

  // ---- membership ------------------------------------------------------------------------------

  /** Learns the membership from the seed workers, creating epoch 1 on a fresh cluster; retries until it can. */
  async bootstrap(): Promise<void> {
    for (let attempt = 1; !this.closed; attempt++) {
      try {
        await this.tryBootstrap();
        return;
      } catch (err) {
        if (attempt === 1 || attempt % 20 === 0) this.log.warn({ err: (err as Error).message, attempt }, 'cannot learn the cluster membership yet; retrying');
        await new Promise((r) => setTimeout(r, BOOTSTRAP_RETRY_MS));
      }
    }
  }

  private async tryBootstrap(): Promise<void> {
    const t = this.options.controlTimeoutMs;
    const replies = await Promise.allSettled(this.seeds.map((m) => this.withClient(m, (c) => getMembership(c, m.name, t))));
    const known = replies.flatMap((r) => (r.status === 'fulfilled' && r.value.state_json ? [decodeState(r.value.state_json)] : []));
    if (known.length > 0) {
      const stored = known.reduce((a, b) => (b.epoch > a.epoch ? b : a));
      const storedNames = stored.members.map((m) => m.name).join(',');
      const seedNames = [...this.seeds].map((m) => m.name).sort().join(',');
      if (storedNames !== seedNames) {
        this.log.warn(
          { epoch: stored.epoch, members: storedNames, seed: seedNames },
          'the workers\' stored membership differs from the members this gateway was started with (--members/KV_MEMBERS; under npm start, --workers); the stored one is used (change it with kvctl cluster add/remove)',
        );
      }
      this.install(stored);
      await this.refresh();
      return;
    }
    // A fresh cluster: every seed must answer, so that no worker that holds a state is overlooked.
    const down = replies.flatMap((r, i) => (r.status === 'rejected' ? [`${this.seeds[i].name} (${(r.reason as Error).message})`] : []));
    if (down.length > 0) throw new Error(`cannot create the first membership while seed workers are unreachable: ${down.join('; ')}`);
    const initial: MembershipState = { epoch: 1, members: [...this.seeds], previous: null };
    const leader = this.seeds.find((m) => m.name === leaderOf(initial))!;
    const r = await this.withClient(leader, (c) => setMembership(c, leader.name, { expected_epoch: 0, state_json: encodeState(initial), propagate: false }, t));
    this.install(r.applied ? initial : decodeState(r.state_json));
    await this.refresh();
  }

  /**
   * Asks every participant for its state, adopts the highest epoch, and brings every worker that is
   * behind up to it. Concurrent callers share one refresh. `refusedBy`: the worker that just refused
   * a request's epoch, so it is up, though its gRPC channel may still be in reconnect backoff (it
   * restarted, and the exchange connection came back first); its answer is waited for, briefly.
   */
  refresh(refusedBy?: string): Promise<void> {
    if (this.refreshing) {
      if (refusedBy === undefined || refusedBy === this.refreshingFor) return this.refreshing;
      // The running refresh did not wait for this worker (the mover's, another request's retry): if it
      // got no answer from it, one more refresh that waits, or the request would use up its retries
      // on refreshes that ask its refuser nothing.
      return this.refreshing.then(() => (this.unanswered.has(refusedBy) ? this.refresh(refusedBy) : undefined));
    }
    this.refreshingFor = refusedBy;
    this.refreshing = this.doRefresh(refusedBy).finally(() => {
      this.refreshing = undefined;
      this.refreshingFor = undefined;
    });
    return this.refreshing;
  }

  private async doRefresh(refusedBy?: string): Promise<void> {
    const t = this.options.controlTimeoutMs;
    let best = this.current().state;
    // Each worker asked, with the epoch it answered (undefined: no answer).
    const asked = new Map<string, { m: MemberSpec; epoch: number | undefined }>();
    // A newer state can name workers the older one did not (one added by another gateway); they are
    // asked too, so one that missed the newest state is brought up to it like the others.
    for (let round = 0; round < 2; round++) {
      const toAsk = participants(best).filter((m) => !asked.has(m.name));
      if (toAsk.length === 0) break;
      const replies = await Promise.allSettled(
        toAsk.map((m) => this.withClient(m, (c) => (m.name === refusedBy ? getMembership(c, m.name, Math.min(t, READY_WAIT_MS), true) : getMembership(c, m.name, t)))),
      );
      replies.forEach((r, i) => {
        asked.set(toAsk[i].name, { m: toAsk[i], epoch: r.status === 'fulfilled' ? r.value.epoch : undefined });
        if (r.status !== 'fulfilled' || !r.value.state_json) return;
        const s = decodeState(r.value.state_json);
        if (s.epoch > best.epoch) best = s;
      });
    }
    this.unanswered = new Set([...asked].filter(([, a]) => a.epoch === undefined).map(([name]) => name));
    if (best.epoch > this.epoch) this.install(best);
    const behind = [...asked.values()].filter((a) => a.epoch !== undefined && a.epoch < best.epoch).map((a) => a.m);
    await this.propagate(this.current().state, behind);
  }

  /** Pushes a state to workers (propagation: a higher epoch replaces a lower one). Best effort. */
  private async propagate(state: MembershipState, targets: (MemberSpec | undefined)[]): Promise<string[]> {
    const json = encodeState(state);
    const t = this.options.controlTimeoutMs;
    const failed: string[] = [];
    await Promise.all(
      targets.map(async (m) => {
        if (!m) return;
        try {
          await this.withClient(m, (c) => setMembership(c, m.name, { expected_epoch: 0, state_json: json, propagate: true }, t));
        } catch (err) {
          failed.push(`${m.name} (${(err as Error).message})`);
        }
      }),
    );
    if (failed.length > 0) this.log.warn({ epoch: state.epoch, failed }, 'could not bring every worker to the new membership yet; it will be retried');
    return failed;
  }

  /**
   * Changes the worker set: epoch+1 with the old ring kept as `previous` until the mover has moved
   * every key whose owner changed. The change is a compare-and-set on the leader worker, so two
   * concurrent changes cannot both win; then it is propagated to every participant.
   */
  async change(add: MemberSpec[], remove: string[]): Promise<MembershipState> {
    await this.refresh();
    const cur = this.current().state;
    if (cur.previous) {
      throw new KvError(grpc.status.FAILED_PRECONDITION, `a migration to epoch ${cur.epoch} is in progress; wait until it completes (kvctl cluster status)`);
    }
    const names = new Set(cur.members.map((m) => m.name));
    for (const m of add) if (names.has(m.name)) throw new KvError(grpc.status.ALREADY_EXISTS, `worker ${m.name} is already a member`);
    for (const n of remove) if (!names.has(n)) throw new KvError(grpc.status.NOT_FOUND, `worker ${n} is not a member`);
    const members = [...cur.members.filter((m) => !remove.includes(m.name)), ...add];
    if (members.length === 0) throw new KvError(grpc.status.FAILED_PRECONDITION, 'cannot remove every worker');
    if (add.length === 0 && remove.length === 0) return cur;
    const next: MembershipState = { epoch: cur.epoch + 1, members, previous: cur.members };
    // Nothing changes unless every worker that takes part can be reached now.
    const t = this.options.controlTimeoutMs;
    const checks = await Promise.allSettled(participants(next).map((m) => this.withClient(m, (c) => workerStatus(c, m.name, t))));
    const down = checks.flatMap((c, i) => (c.status === 'rejected' ? [`${participants(next)[i].name}: ${(c.reason as Error).message}`] : []));
    if (down.length > 0) throw new KvError(grpc.status.UNAVAILABLE, `membership unchanged: workers unreachable: ${down.join('; ')}`);
    await this.commit(cur, next);
    return next;
  }

  /** Ends a migration once the mover found nothing left to move: epoch+1 without `previous`. */
  async finishMigration(from: MembershipState): Promise<boolean> {
    if (this.epoch !== from.epoch || !from.previous) return false;
    const next: MembershipState = { epoch: from.epoch + 1, members: from.members, previous: null };
    return this.commit(from, next);
  }

  private async commit(from: MembershipState, next: MembershipState): Promise<boolean> {
    const leaderName = leaderOf(from);
    const leader = participants(from).find((m) => m.name === leaderName)!;
    const r = await this.withClient(leader, (c) =>
      setMembership(c, leader.name, { expected_epoch: from.epoch, state_json: encodeState(next), propagate: false }, this.options.controlTimeoutMs),
    );
    if (!r.applied) {
      await this.refresh();
      throw new KvError(grpc.status.ABORTED, `membership changed concurrently (leader ${leaderName} is at epoch ${r.epoch}); check kvctl cluster status and retry`);
    }
    // Participants of both states: a removed worker must learn that it owns nothing any more.
    const everyone = new Map([...participants(from), ...participants(next)].map((m) => [m.name, m]));
    everyone.delete(leaderName);
    this.install(next);
    await this.propagate(next, [...everyone.values()]);
    return true;
  }

  // ---- data path ---------------------------------------------------------------------------------

  /**
   * execute() for the public API's hot path: a key that is not moving goes to its owner with one
   * callback and no promise (a promise chain per request was ~3 us of the gateway's CPU); a moving key
   * or an epoch refusal takes execute().
   */
  route(type: OpTypeValue, key: string, value: string, done: RouteDone): void {
    let owner: string;
    let link: WorkerLink;
    let epoch: number;
    try {
      const p = this.current();
      epoch = p.epoch;
      owner = p.owner(key);
      if (p.previousOwner(key, owner) !== owner) return this.routeSlowly(type, key, value, 0, done);
      link = this.link(owner);
    } catch (err) {
      return done(err);
    }
    // Sent with the epoch the owner was chosen by (see WorkerLink.flush), not the one at flush time.
    link.send(
      type,
      key,
      value,
      (err, r) => {
        if (err) return done(err);
        if (r!.code !== grpc.status.FAILED_PRECONDITION) return done(null, r, owner);
        this.routeSlowly(type, key, value, 1, done, owner);
      },
      epoch,
    );
  }

  /** execute() from `attempt` on, refreshing the membership first after an epoch refusal (attempt > 0). */
  private routeSlowly(type: OpTypeValue, key: string, value: string, attempt: number, done: RouteDone, refusedBy?: string): void {
    (attempt > 0 ? this.refresh(refusedBy).then(() => this.execute(type, key, value, attempt)) : this.execute(type, key, value, attempt))
      .then(
        (x) => done(null, x.r, x.worker),
        (err: unknown) => done(err),
      )
      // A throwing callback must not become an unhandled rejection (that ends the process).
      .catch((err: unknown) => this.log.error({ err }, 'a request callback threw'));
  }

  /** Routes one point operation to the key's owner, refreshing membership and retrying on an epoch refusal. */
  async execute(type: OpTypeValue, key: string, value: string, firstAttempt = 0): Promise<Routed> {
    for (let attempt = firstAttempt; ; attempt++) {
      const p = this.current();
      const owner = p.owner(key);
      const previous = p.previousOwner(key, owner);
      const routed = owner === previous ? { r: await this.link(owner).call(type, key, value, p.epoch), worker: owner } : await this.moving(type, key, value, owner, previous, p.epoch);
      if (routed.r.code !== grpc.status.FAILED_PRECONDITION) return routed;
      if (attempt >= MAX_EPOCH_RETRIES) return { ...routed, r: stillRefused(routed.r, attempt) };
      // Only a request's first refresh waits for the refusing worker, so a worker whose gRPC stays
      // unreachable costs a request one wait, not one per retry.
      await this.refresh(attempt === 0 ? routed.worker : undefined);
    }
  }

  private async moving(type: OpTypeValue, key: string, value: string, owner: string, previous: string, epoch: number): Promise<Routed> {
    // Old owner first, for a Delete too: the old owner then refuses this epoch unless it has installed
    // it, and once it has, it refuses writes from gateways still on the older epoch. A Delete sent
    // straight to the new owner would leave the old owner accepting a stale gateway's Put after it,
    // which the mover (seeing the tombstone) would then drop: an acknowledged write lost. It also
    // means that if the mover moves the key in between, the new owner already has it.
    // Both visits carry the epoch the two owners were chosen by: if the membership moves on between
    // them (say the migration ends, clearing the new owner's tombstones), the second is refused and
    // retried, rather than answered under rules that make `before` look like the current value.
    const before = await this.link(previous).call(OpType.GET, key, '', epoch);
    if (before.code !== grpc.status.OK && before.code !== grpc.status.NOT_FOUND) return { r: before, worker: previous };
    const r = await this.link(owner).call(type, key, value, epoch);
    if (type === OpType.DELETE) return { r, worker: owner };
    if (type === OpType.GET) {
      if (r.code === grpc.status.NOT_FOUND && !r.tombstone) return { r: before, worker: previous };
      return { r, worker: owner };
    }
    if (r.code !== grpc.status.OK || r.found || r.tombstone) return { r, worker: owner };
    // The new owner had no record: the previous value is the one the old owner held.
    return { r: { ...r, found: before.code === grpc.status.OK, value: before.code === grpc.status.OK ? before.value : '' }, worker: owner };
  }

  /**
   * Every key, sorted, each once. During a migration the old ring is scanned before the new one (a key
   * moves by copy-then-drop, so it is seen in at least one), and keys deleted on their new owner are
   * left out. A worker changing epoch mid-listing refuses the scan, and the listing starts over.
   */
  async listKeys(timeoutMs: number): Promise<string[]> {
    for (let attempt = 0; ; attempt++) {
      const p = this.current();
      const epoch = p.epoch;
      const scanAll = async (names: string[], withTombstones: boolean) => {
        const tombstones: string[] = [];
        const result = await fanout(names.map((n) => this.link(n)), async (link) => {
          const keys: string[] = [];
          await scan(link.client, link.name, { epoch, with_tombstones: withTombstones }, timeoutMs, (chunk) => {
            for (const k of chunk.keys) keys.push(k);
            for (const k of chunk.tombstones) tombstones.push(k);
          });
          return keys;
        });
        return { ...result, tombstones };
      };
      const rounds = p.state.previous ? [p.state.previous.map((m) => m.name), p.state.members.map((m) => m.name)] : [p.state.members.map((m) => m.name)];
      const lists: string[][] = [];
      const tombstones = new Set<string>();
      let failure: KvError | undefined;
      for (let i = 0; i < rounds.length && !failure; i++) {
        const { ok, failed, tombstones: t } = await scanAll(rounds[i], i === rounds.length - 1 && rounds.length > 1);
        for (const k of t) tombstones.add(k);
        lists.push(...ok.values());
        if (failed.length > 0) {
          const stale = failed.some((f) => f.code === grpc.status.FAILED_PRECONDITION);
          if (stale && attempt < MAX_EPOCH_RETRIES) {
            failure = new KvError(grpc.status.FAILED_PRECONDITION, describeFailures(failed));
            break;
          }
          const code = failed.every((f) => f.code === grpc.status.DEADLINE_EXCEEDED) ? grpc.status.DEADLINE_EXCEEDED : grpc.status.UNAVAILABLE;
          throw new KvError(code, `ListKeys needs every worker; ${failed.length} could not answer: ${describeFailures(failed)}`);
        }
      }
      if (failure) {
        await this.refresh();
        continue;
      }
      const merged = mergeSorted(lists);
      return tombstones.size === 0 ? merged : merged.filter((k) => !tombstones.has(k));
    }
  }

  async close(graceMs: number): Promise<void> {
    this.closed = true;
    await Promise.all([...this.links.values()].map((l) => l.close(graceMs)));
  }
}
