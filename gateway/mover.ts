// The background mover of an online migration: for each worker of the old ring, it streams the keys
// that worker holds but no longer owns, copies each to its new owner (COPY never overwrites a newer
// write and never passes a tombstone) and only then drops it from the old owner. When a full pass
// finds nothing left, it ends the migration (epoch+1, no previous ring). Every gateway runs one; two
// movers copying the same key are harmless, and a mover on an old epoch is refused by the workers.
import * as grpc from '@grpc/grpc-js';
import { Counter, Gauge, type Registry } from 'prom-client';
import { METRIC_PREFIX as P } from '../shared/metrics.js';
import type { Logger } from '../shared/logger.js';
import { Placement, type MembershipState } from '../shared/membership.js';
import { OpType } from '../shared/proto.js';
import type { Cluster } from './cluster.js';
import { scan } from './worker-rpc.js';

export interface MoverOptions {
  /** Keys moved per second at most, across all sources. */
  rate: number;
  chunk: number;
  scanTimeoutMs: number;
}

export interface MoverProgress {
  epoch: number;
  phase: 'stable' | 'migrating';
  moved: number;
  remaining: number;
  lastError: string;
}

const RETRY_MS = 1000;

export class Mover {
  private running: Promise<void> | undefined;
  private stopped = false;
  private readonly progress: MoverProgress = { epoch: 0, phase: 'stable', moved: 0, remaining: 0, lastError: '' };
  private readonly movedTotal: Counter;
  private readonly remainingGauge: Gauge;
  private readonly phaseGauge: Gauge;
  private readonly epochGauge: Gauge;

  constructor(
    private readonly cluster: Cluster,
    private readonly options: MoverOptions,
    private readonly log: Logger,
    registry?: Registry,
  ) {
    const registers = registry ? [registry] : [];
    this.movedTotal = new Counter({ name: `${P}gateway_migration_keys_moved_total`, help: 'Keys this gateway moved to their new owner during migrations', registers });
    this.remainingGauge = new Gauge({ name: `${P}gateway_migration_keys_remaining`, help: 'Keys still to move in the current migration (as last counted)', registers });
    this.phaseGauge = new Gauge({ name: `${P}gateway_migration_in_progress`, help: '1 while keys move after a membership change, else 0', registers });
    this.epochGauge = new Gauge({ name: `${P}gateway_membership_epoch`, help: 'Membership epoch this gateway routes with', registers });
    cluster.onStateChange((state) => this.onState(state));
  }

  status(): MoverProgress {
    return { ...this.progress };
  }

  private onState(state: MembershipState): void {
    this.progress.epoch = state.epoch;
    this.progress.phase = state.previous ? 'migrating' : 'stable';
    this.epochGauge.set(state.epoch);
    this.phaseGauge.set(state.previous ? 1 : 0);
    if (!state.previous) {
      this.progress.remaining = 0;
      this.remainingGauge.set(0);
      return;
    }
    if (!this.running && !this.stopped) {
      this.running = this.run().finally(() => {
        this.running = undefined;
        // A newer migration may have started while this one wound down.
        if (!this.stopped && this.cluster.ready && this.cluster.state.previous) this.onState(this.cluster.state);
      });
    }
  }

  private async run(): Promise<void> {
    while (!this.stopped) {
      const state = this.cluster.state;
      if (!state.previous) return;
      try {
        this.progress.remaining = await this.count(state);
        this.remainingGauge.set(this.progress.remaining);
        if (this.progress.remaining === 0) {
          if (await this.cluster.finishMigration(state)) this.log.info({ epoch: this.cluster.epoch, moved: this.progress.moved }, 'migration complete');
          return;
        }
        this.log.info({ epoch: state.epoch, remaining: this.progress.remaining }, 'moving keys');
        for (const source of state.previous) {
          if (this.stopped || this.cluster.epoch !== state.epoch) break;
          await this.drain(state, source.name);
        }
        this.progress.lastError = '';
      } catch (err) {
        this.progress.lastError = (err as Error).message;
        this.log.warn({ err: (err as Error).message, epoch: state.epoch }, 'migration step failed; retrying');
        if (this.isStale(err)) await this.cluster.refresh().catch(() => undefined);
        await new Promise((r) => setTimeout(r, RETRY_MS));
      }
    }
  }

  private isStale(err: unknown): boolean {
    return (err as { code?: number }).code === grpc.status.FAILED_PRECONDITION;
  }

  /** Keys the old ring's workers hold but no longer own. */
  private async count(state: MembershipState): Promise<number> {
    let n = 0;
    for (const source of state.previous ?? []) {
      const link = this.cluster.link(source.name);
      await scan(link.client, link.name, { epoch: state.epoch, moving_only: true }, this.options.scanTimeoutMs, (c) => {
        n += c.keys.length;
      });
    }
    return n;
  }

  /** Moves one source's leaving keys, chunk by chunk, throttled to the configured rate. */
  private async drain(state: MembershipState, source: string): Promise<void> {
    const placement = new Placement(state);
    const sourceLink = this.cluster.link(source);
    let after = '';
    for (;;) {
      const entries: { key: string; value: string }[] = [];
      await scan(
        sourceLink.client,
        source,
        { epoch: state.epoch, moving_only: true, with_values: true, after, limit: this.options.chunk },
        this.options.scanTimeoutMs,
        (c) => c.keys.forEach((key, i) => entries.push({ key, value: c.values[i] })),
      );
      if (entries.length === 0) return;
      const started = Date.now();
      const copies = await Promise.all(entries.map((e) => this.cluster.link(placement.owner(e.key)).call(OpType.COPY, e.key, e.value)));
      const failed = copies.find((r) => r.code !== grpc.status.OK);
      if (failed) throw Object.assign(new Error(`copy to new owner failed: ${failed.message || grpc.status[failed.code]}`), { code: failed.code });
      // Dropped only after every copy is acknowledged: the key is always on one of its two owners.
      const drops = await Promise.all(entries.map((e) => sourceLink.call(OpType.DROP, e.key, '')));
      const dropFailed = drops.find((r) => r.code !== grpc.status.OK);
      if (dropFailed) throw Object.assign(new Error(`drop from ${source} failed: ${dropFailed.message || grpc.status[dropFailed.code]}`), { code: dropFailed.code });
      // A copy that found a record was a no-op (a client wrote first, or another gateway's mover
      // copied it): only real copies count as moved.
      const inserted = copies.filter((r) => !r.found).length;
      this.progress.moved += inserted;
      this.progress.remaining = Math.max(0, this.progress.remaining - entries.length);
      this.movedTotal.inc(inserted);
      this.remainingGauge.set(this.progress.remaining);
      after = entries[entries.length - 1].key;
      const minMs = (entries.length / this.options.rate) * 1000;
      const spent = Date.now() - started;
      if (spent < minMs) await new Promise((r) => setTimeout(r, minMs - spent));
      if (this.stopped || this.cluster.epoch !== state.epoch) return;
    }
  }

  async stop(): Promise<void> {
    this.stopped = true;
    await this.running?.catch(() => undefined);
  }
}
