// Which worker owns a key. Members are stable worker names, never addresses, so a worker that comes
// back on a new IP owns the same keys.
//
// hashring computes each member's point count as floor(weight share * vnodes * members), which float
// rounding sometimes makes one less for some member counts; adding a member then shifts points of
// members that stayed and moves keys between them (hashring PR #45). Giving every member an explicit
// vnode count makes hashring use that count exactly. test/ring.test.ts proves it for 1 to 16 members.
import { hash } from 'node:crypto';
import HashRing from 'hashring';

// hashring's own lookup structures, used directly by owner() (see there).
interface HashRingInternals {
  ring: { value: number; server: string }[];
  find(hashValue: number): number;
}

export const VNODES_PER_MEMBER = 160;
export const REPLICAS_PER_VNODE = 4;
// hashring's LRU cache only costs when keys are many and spread: owner() bypasses it.
const CACHE_SIZE = 1;

export class Ring {
  private readonly ring: HashRing;
  readonly members: readonly string[];

  constructor(members: readonly string[]) {
    if (members.length === 0) throw new Error('a ring needs at least one member');
    const unique = new Set(members);
    if (unique.size !== members.length) throw new Error(`duplicate ring member in [${members.join(', ')}]`);
    this.members = [...members].sort();
    const servers: Record<string, { vnodes: number }> = {};
    for (const m of this.members) servers[m] = { vnodes: VNODES_PER_MEMBER };
    this.ring = new HashRing(servers, 'md5', { replicas: REPLICAS_PER_VNODE, 'max cache size': CACHE_SIZE });
  }

  /**
   * Same answer as hashring's get(key), without its LRU cache and with a one-shot md5: with 100k keys
   * the 10k-entry cache mostly misses, and get() measured 8 µs per call against 1 µs for this (that is
   * ~5% of the gateway's CPU per request). The point value is hashring's (first four digest bytes,
   * little-endian) and find() is hashring's own binary search, so placement cannot drift;
   * test/ring-owner.test.ts checks it against get() for many keys.
   */
  owner(key: string): string {
    const d = hash('md5', key, 'buffer');
    const point = ((d[3] << 24) | (d[2] << 16) | (d[1] << 8) | d[0]) >>> 0;
    const internals = this.ring as unknown as HashRingInternals;
    return internals.ring[internals.find(point)].server;
  }

  /** hashring's own answer, kept for the test that proves owner() agrees with it. */
  ownerViaHashring(key: string): string {
    return this.ring.get(key);
  }

  /** The ring's parameters, recorded in backup manifests so a restore can reproduce placement. */
  describe(): { members: string[]; algorithm: string; vnodes: number; replicas: number } {
    return { members: [...this.members], algorithm: 'md5', vnodes: VNODES_PER_MEMBER, replicas: REPLICAS_PER_VNODE };
  }
}
