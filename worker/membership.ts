// This worker's copy of the cluster membership, persisted in its own SQLite file, and the fencing
// that follows from it: a request routed with another epoch is refused (the gateway refreshes and
// retries), and so is a write for a key this worker does not own.
import { OpType, type MembershipReply, type Op } from '../shared/proto.js';
import { Placement, decodeState, encodeState, sameState, type MembershipState } from '../shared/membership.js';
import { Placed, type OpCheck, type Store } from './store.js';

const META_KEY = 'membership';

export class WorkerMembership {
  private placement: Placement | undefined;
  /** Called after a new state is installed. */
  onChange: (state: MembershipState) => void = () => {};

  constructor(
    private readonly store: Store,
    readonly self: string,
  ) {
    const json = store.getMeta(META_KEY);
    if (json) this.placement = new Placement(decodeState(json));
  }

  get epoch(): number {
    return this.placement?.epoch ?? 0;
  }

  get state(): MembershipState | undefined {
    return this.placement?.state;
  }

  /** False once a membership that leaves this worker out is installed (it may then be stopped). */
  get isMember(): boolean {
    const p = this.placement;
    if (!p) return true;
    return p.isMember(this.self) || (p.state.previous?.some((m) => m.name === this.self) ?? false);
  }

  reply(applied: boolean): MembershipReply {
    return { applied, state_json: this.placement ? encodeState(this.placement.state) : '', epoch: this.epoch };
  }

  /**
   * Compare-and-set (the change is applied only at the expected epoch) or propagation (a higher epoch
   * replaces a lower one). Re-sending the installed state is accepted either way, so retries are safe.
   */
  set(expectedEpoch: number, json: string, propagate: boolean): MembershipReply {
    const next = decodeState(json);
    const current = this.placement?.state;
    if (current && sameState(current, next)) return this.reply(true);
    const ok = propagate ? next.epoch > this.epoch : expectedEpoch === this.epoch && next.epoch > this.epoch;
    if (!ok) return this.reply(false);
    // A tombstone belongs to the one migration it was written in, and every new epoch ends that
    // migration (epochs go stable -> migrating -> stable). So every install clears them, in the same
    // transaction: also when this worker missed the stable epoch in between and jumps from one
    // migration straight to the next, where an old tombstone would make the mover skip a live key.
    this.store.setMeta(META_KEY, encodeState(next), () => this.store.clearTombstones());
    this.placement = new Placement(next);
    this.onChange(next);
    return this.reply(true);
  }

  /** The epoch check for a whole batch: undefined if it may proceed, else the refusal message. */
  checkEpoch(epoch: number): string | undefined {
    if (epoch === 0 || epoch === this.epoch) return undefined;
    return epoch > this.epoch
      ? `worker ${this.self} is at membership epoch ${this.epoch}, behind the request's ${epoch}`
      : `stale membership epoch ${epoch}: worker ${this.self} is at epoch ${this.epoch}`;
  }

  /** Per-op ownership: who may read, write, copy or drop a key under the installed membership. */
  readonly check: OpCheck = (op: Op) => {
    const p = this.placement;
    if (!p) return op.type === OpType.COPY || op.type === OpType.DROP ? `worker ${this.self} has no membership yet` : Placed.Owned;
    const owner = p.owner(op.key);
    const previous = p.previousOwner(op.key, owner);
    const moving = owner !== previous;
    switch (op.type) {
      case OpType.GET:
        if (owner === this.self) return moving ? Placed.Moving : Placed.Owned;
        if (previous === this.self) return Placed.Owned;
        break;
      case OpType.PUT:
      case OpType.DELETE:
        if (owner === this.self) return moving ? Placed.Moving : Placed.Owned;
        break;
      case OpType.COPY:
        if (owner === this.self && moving) return Placed.Moving;
        break;
      case OpType.DROP:
        if (previous === this.self && owner !== this.self) return Placed.Owned;
        break;
    }
    return `worker ${this.self} does not own this key at epoch ${p.epoch} (owner ${owner})`;
  };

  /** True if this worker holds `key` but no longer owns it (a migration source). */
  isLeaving(key: string): boolean {
    const p = this.placement;
    return p !== undefined && p.owner(key) !== this.self;
  }
}
