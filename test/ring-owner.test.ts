// Ring.owner() reads hashring's structures directly (for speed); it must give hashring's own answer
// for every key, or keys would silently move between workers.
import { describe, expect, it } from 'vitest';
import { Ring } from '../shared/ring.js';

describe('Ring.owner', () => {
  it.each([1, 2, 3, 4, 7, 16])('agrees with hashring.get for %i members', (n) => {
    const ring = new Ring(Array.from({ length: n }, (_, i) => `worker-${i}`));
    let differ = 0;
    for (let i = 0; i < 20_000; i++) {
      // Plain keys, and keys with NUL, control bytes, spaces and the highest ASCII byte.
      const key = i % 2 ? `key-${i}` : `${String.fromCharCode(i % 128)} ${i}\u007f`;
      if (ring.owner(key) !== ring.ownerViaHashring(key)) differ++;
    }
    expect(differ).toBe(0);
  });
});
