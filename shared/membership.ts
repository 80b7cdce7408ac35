// Cluster membership as versioned state: the ordered set of worker names (with addresses) and an
// epoch that grows by one with every change. While keys move after a change, the state also names
// the ring being migrated from. Every worker stores the state (in its SQLite file), so it survives
// any single process and every gateway converges on the highest epoch without a coordinator.
import { Ring } from './ring.js';

export interface MemberSpec {
  name: string;
  address: string;
}

export interface MembershipState {
  epoch: number;
  /** The ring keys belong to (during a migration: the ring they are moving to). */
  members: MemberSpec[];
  /** The ring keys are moving from; null when no migration is in progress. */
  previous: MemberSpec[] | null;
}

function sortMembers(members: MemberSpec[]): MemberSpec[] {
  return [...members].sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
}

export function normalize(state: MembershipState): MembershipState {
  return { epoch: state.epoch, members: sortMembers(state.members), previous: state.previous ? sortMembers(state.previous) : null };
}

export function sameState(a: MembershipState, b: MembershipState): boolean {
  return JSON.stringify(normalize(a)) === JSON.stringify(normalize(b));
}

export function encodeState(state: MembershipState): string {
  return JSON.stringify(normalize(state));
}

export function decodeState(json: string): MembershipState {
  const s = JSON.parse(json) as MembershipState;
  if (!Number.isSafeInteger(s.epoch) || s.epoch < 1 || !Array.isArray(s.members) || s.members.length === 0) {
    throw new Error(`invalid membership state: ${json.slice(0, 200)}`);
  }
  return normalize(s);
}

/**
 * The worker that serialises changes to a state: a change from `state` is first applied there with a
 * compare-and-set on the epoch, so two concurrent proposals cannot both win. Every gateway computes
 * the same leader from the same state.
 */
export function leaderOf(state: MembershipState): string {
  return sortMembers(state.members)[0].name;
}

/** Every worker that takes part in a state: the target ring plus, during a migration, the old one. */
export function participants(state: MembershipState): MemberSpec[] {
  const byName = new Map<string, MemberSpec>();
  for (const m of state.previous ?? []) byName.set(m.name, m);
  for (const m of state.members) byName.set(m.name, m);
  return sortMembers([...byName.values()]);
}

/** Where keys live under a state: their owner, and during a migration the owner they are leaving. */
export class Placement {
  readonly ring: Ring;
  readonly previousRing: Ring | undefined;

  constructor(readonly state: MembershipState) {
    this.ring = new Ring(state.members.map((m) => m.name));
    this.previousRing = state.previous ? new Ring(state.previous.map((m) => m.name)) : undefined;
  }

  get epoch(): number {
    return this.state.epoch;
  }

  get migrating(): boolean {
    return this.previousRing !== undefined;
  }

  owner(key: string): string {
    return this.ring.owner(key);
  }

  /**
   * The key's owner on the ring being left; equals `owner` when stable or when the key does not move.
   * Takes the key's current owner so a stable cluster (the hot path) hashes each key once.
   */
  previousOwner(key: string, owner: string): string {
    return this.previousRing ? this.previousRing.owner(key) : owner;
  }

  isMember(name: string): boolean {
    return this.state.members.some((m) => m.name === name);
  }
}
