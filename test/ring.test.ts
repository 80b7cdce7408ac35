import { describe, expect, it } from 'vitest';
import { parseMembers } from '../gateway/members.js';
import { Ring } from '../shared/ring.js';

const names = (n: number): string[] => Array.from({ length: n }, (_, i) => `worker-${i}`);
const keys = (n: number): string[] => Array.from({ length: n }, (_, i) => `key:${i}:${(i * 2654435761) % 1000003}`);

describe('ring', () => {
  it('routes the same key to the same worker, whatever the member order or instance', () => {
    const a = new Ring(names(3));
    const b = new Ring([...names(3)].reverse());
    for (const k of keys(2000)) expect(b.owner(k)).toBe(a.owner(k));
  });

  it('spreads 30k keys over 3 workers within ±10% of even', () => {
    const ring = new Ring(names(3));
    const counts = new Map<string, number>();
    for (const k of keys(30_000)) counts.set(ring.owner(k), (counts.get(ring.owner(k)) ?? 0) + 1);
    expect(counts.size).toBe(3);
    for (const c of counts.values()) {
      expect(c).toBeGreaterThan(9000);
      expect(c).toBeLessThan(11000);
    }
  });

  it('places by name, not by address: a worker on a new address owns the same keys', () => {
    const before = parseMembers('worker-0=10.0.0.1:50052,worker-1=10.0.0.2:50052');
    const after = parseMembers('worker-0=10.0.0.1:50052,worker-1=10.9.9.9:6000');
    const r1 = new Ring(before.map((m) => m.name));
    const r2 = new Ring(after.map((m) => m.name));
    for (const k of keys(1000)) expect(r2.owner(k)).toBe(r1.owner(k));
  });

  // hashring's computed point counts can drop by one at some member counts and shift keys between
  // members that stayed (its PR #45); explicit vnode counts avoid that. Checked for 1 to 16 members.
  it.each(Array.from({ length: 16 }, (_, i) => i + 1))('adding a member to %i moves keys only onto it, about 1/(n+1) of them', (n) => {
    const old = new Ring(names(n));
    const grown = new Ring(names(n + 1));
    const newcomer = `worker-${n}`;
    const all = keys(20_000);
    let moved = 0;
    for (const k of all) {
      const from = old.owner(k);
      const to = grown.owner(k);
      if (from !== to) {
        expect(to).toBe(newcomer);
        moved++;
      }
    }
    const expected = all.length / (n + 1);
    expect(moved).toBeGreaterThan(expected * 0.75);
    expect(moved).toBeLessThan(expected * 1.25);
  });

  it.each([2, 3, 5, 8])('removing a member of %i moves only its keys', (n) => {
    const full = new Ring(names(n));
    const gone = 'worker-1';
    const shrunk = new Ring(names(n).filter((m) => m !== gone));
    for (const k of keys(10_000)) {
      const before = full.owner(k);
      if (before !== gone) expect(shrunk.owner(k)).toBe(before);
      else expect(shrunk.owner(k)).not.toBe(gone);
    }
  });

  it('rejects an empty or duplicated membership', () => {
    expect(() => new Ring([])).toThrow(/at least one member/);
    expect(() => new Ring(['a', 'a'])).toThrow(/duplicate/);
  });
});

describe('member list', () => {
  it('parses name=address pairs and bare names through a template', () => {
    expect(parseMembers('w-0=127.0.0.1:1, w-1=host:2')).toEqual([
      { name: 'w-0', address: '127.0.0.1:1' },
      { name: 'w-1', address: 'host:2' },
    ]);
    expect(parseMembers('kv-worker-0', '{name}.kv-worker:50052')).toEqual([{ name: 'kv-worker-0', address: 'kv-worker-0.kv-worker:50052' }]);
  });

  it('explains what is wrong', () => {
    expect(() => parseMembers('')).toThrow(/no workers given/);
    expect(() => parseMembers('Worker_0=h:1')).toThrow(/DNS label/);
    expect(() => parseMembers('w-0')).toThrow(/has no address/);
    expect(() => parseMembers('w-0=h')).toThrow(/host:port/);
    expect(() => parseMembers('w-0=127.0.0.1:99999')).toThrow(/worker w-0: port 99999 in "127.0.0.1:99999" is not 1 to 65535/);
    expect(() => parseMembers('w-0=127.0.0.1:0')).toThrow(/port 0 .* is not 1 to 65535/);
    expect(() => parseMembers('w-0', '{name}.kv-worker:70000')).toThrow(/port 70000/);
    expect(() => parseMembers('w-0=h:1,w-0=h:2')).toThrow(/listed twice/);
  });
});
