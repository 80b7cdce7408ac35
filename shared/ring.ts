// Which worker owns a key. Members are stable worker names, never addresses, so a worker that comes
// back on a new IP owns the same keys.
//
// hashring computes each member's point count as floor(weight share * vnodes * members), which float
// rounding sometimes makes one less for some member counts; adding a member then shifts points of
// members that stayed and moves keys between them (hashring PR #45). Giving every member an explicit
// vnode count makes hashring use that count exactly. test/ring.test.ts proves it for 1 to 16 members.
import HashRing from 'hashring';

export const VNODES_PER_MEMBER = 160;
export const REPLICAS_PER_VNODE = 4;
const CACHE_SIZE = 10_000;

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

  owner(key: string): string {
    return this.ring.get(key);
  }

  /** The ring's parameters, recorded in backup manifests so a restore can reproduce placement. */
  describe(): { members: string[]; algorithm: string; vnodes: number; replicas: number } {
    return { members: [...this.members], algorithm: 'md5', vnodes: VNODES_PER_MEMBER, replicas: REPLICAS_PER_VNODE };
  }
}
