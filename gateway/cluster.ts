// The gateway's view of the workers: the ring over their names and one link per worker.
import type * as grpc from '@grpc/grpc-js';
import { statusName } from '../shared/errors.js';
import type { GatewayMetrics } from './metrics.js';
import type { Member } from './members.js';
import { Ring } from './ring.js';
import { WorkerLink, type LinkOptions } from './worker-link.js';

export class Cluster {
  readonly ring: Ring;
  private readonly links = new Map<string, WorkerLink>();

  constructor(
    readonly members: readonly Member[],
    options: LinkOptions,
    metrics?: GatewayMetrics,
  ) {
    this.ring = new Ring(members.map((m) => m.name));
    metrics?.ringMembers.set(members.length);
    for (const m of members) {
      const up = metrics?.workerUp.labels(m.name);
      up?.set(0);
      metrics?.ringMember.labels(m.name, m.address).set(1);
      const errors = new Map<number, { inc(): void }>();
      const link = new WorkerLink(m.name, m.address, options, {
        onState: (isUp) => up?.set(isUp ? 1 : 0),
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
      this.links.set(m.name, link);
    }
    metrics?.setInflightSource(() => [...this.links].map(([name, link]) => [name, link.inflight]));
  }

  /** The link to the worker that owns `key`. */
  ownerOf(key: string): WorkerLink {
    return this.links.get(this.ring.owner(key))!;
  }

  all(): WorkerLink[] {
    return [...this.links.values()];
  }

  client(name: string): grpc.Client {
    const link = this.links.get(name);
    if (!link) throw new Error(`unknown worker ${name}`);
    return link.client;
  }

  async close(graceMs: number): Promise<void> {
    await Promise.all(this.all().map((l) => l.close(graceMs)));
  }
}
