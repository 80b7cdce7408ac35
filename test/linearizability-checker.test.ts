// The linearizability checker itself (test/helpers/linearizability.ts), on histories whose verdict is
// known: so that test/linearizable.test.ts passing means the store passed, not that the checker
// accepts everything.
import { describe, expect, it } from 'vitest';
import { checkRegister, type HistoryOp, type Value } from './helpers/linearizability.js';

const put = (value: string, out: Value | undefined, call: number, ret: number): HistoryOp => ({ kind: 'put', value, out, call, ret });
const get = (out: Value, call: number, ret: number): HistoryOp => ({ kind: 'get', out, call, ret });
const del = (call: number, ret: number): HistoryOp => ({ kind: 'delete', call, ret });
const U = Infinity;

describe('linearizability checker', () => {
  it('accepts a sequential history that replays on a register', () => {
    const v = checkRegister([put('a', null, 0, 1), get('a', 2, 3), put('b', 'a', 4, 5), del(6, 7), get(null, 8, 9), put('c', null, 10, 11)]);
    expect(v).toMatchObject({ ok: true, inconclusive: false, ops: 6 });
  });

  it('refuses a stale read after a completed overwrite', () => {
    const v = checkRegister([put('a', null, 0, 1), put('b', 'a', 2, 3), get('a', 4, 5)]);
    expect(v.ok).toBe(false);
    expect(v.inconclusive).toBe(false);
    expect(v.detail).toContain('get');
  });

  it('lets reads during a write see either value, but never go back', () => {
    const base = [put('a', null, 0, 1), put('b', 'a', 2, 10)];
    expect(checkRegister([...base, get('a', 3, 4), get('b', 5, 6)]).ok).toBe(true);
    expect(checkRegister([...base, get('b', 3, 4), get('a', 5, 6)]).ok).toBe(false);
  });

  it('refuses two Puts that both answer with the same previous value (a lost update)', () => {
    expect(checkRegister([put('a', null, 0, 1), put('b', 'a', 2, 5), put('c', 'a', 3, 6)]).ok).toBe(false);
    expect(checkRegister([put('a', null, 0, 1), put('b', 'a', 2, 5), put('c', 'b', 3, 6)]).ok).toBe(true);
  });

  it('refuses a previous value nobody wrote, and a read of one', () => {
    expect(checkRegister([put('a', null, 0, 1), put('b', 'z', 2, 3)]).ok).toBe(false);
    expect(checkRegister([get('z', 0, 1)]).ok).toBe(false);
    expect(checkRegister([put('a', 'z', 0, 1)]).ok).toBe(false);
  });

  it('lets a write with no answer land at any later time, or never', () => {
    // Landed long after its caller gave up: seen by a later read.
    expect(checkRegister([put('a', null, 0, 1), put('x', undefined, 2, U), get('a', 5, 6), get('x', 20, 21)]).ok).toBe(true);
    // Never seen: it may not have landed at all.
    expect(checkRegister([put('a', null, 0, 1), put('x', undefined, 2, U), get('a', 50, 51)]).ok).toBe(true);
    // Seen, then gone without another write: not a register.
    expect(checkRegister([put('a', null, 0, 1), put('x', undefined, 2, U), get('x', 5, 6), get('a', 7, 8)]).ok).toBe(false);
    // An unknown Delete may land late, but once a read saw it, the old value cannot come back.
    const d = [put('a', null, 0, 1), del(2, U)];
    expect(checkRegister([...d, get('a', 5, 6), get(null, 7, 8)]).ok).toBe(true);
    expect(checkRegister([...d, get(null, 5, 6), get('a', 7, 8)]).ok).toBe(false);
  });

  it('drops reads that failed', () => {
    expect(checkRegister([put('a', null, 0, 1), { kind: 'get', call: 2, ret: U }, get('a', 3, 4)]).ok).toBe(true);
  });

  it('checks a long concurrent history quickly, and finds one stale read in it', () => {
    const { history, overwritten } = simulate(6000, 12, 1);
    const good = checkRegister(history);
    expect(good).toMatchObject({ ok: true, inconclusive: false });
    // About one visited state per call (10,270 for these 6,000): reads placed greedily and the memo
    // keep a long history linear.
    expect(good.explored).toBeLessThan(history.length * 3);

    // One read, late in the history, now returns a value overwritten by a write that had finished
    // before the read began.
    const bad = history.map((o) => ({ ...o }));
    const victim = bad.findIndex((o, i) => i > bad.length * 0.8 && o.kind === 'get' && overwritten.some((w) => w.doneAt < o.call - 50));
    expect(victim).toBeGreaterThan(0);
    bad[victim].out = overwritten.find((w) => w.doneAt < bad[victim].call - 50)!.value;
    const verdict = checkRegister(bad);
    expect(verdict).toMatchObject({ ok: false, inconclusive: false });
  });

  it('agrees with trying every order, on 3,000 small random histories, valid or not', () => {
    let valid = 0;
    let invalid = 0;
    for (let seed = 1; seed <= 1500; seed++) {
      const { history } = simulate(3 + (seed % 4), 3, seed, 0.3);
      // The same history with one answer swapped for another call's: often no longer linearizable.
      const mutated = history.map((o) => ({ ...o }));
      const answered = mutated.filter((o) => o.out !== undefined);
      if (answered.length >= 2) answered[seed % answered.length].out = answered[(seed * 7 + 1) % answered.length].out;
      for (const h of [history, mutated]) {
        const expected = bruteForce(h);
        expect(checkRegister(h).ok, JSON.stringify(h)).toBe(expected);
        if (expected) valid++;
        else invalid++;
      }
    }
    // Both verdicts were exercised, many times.
    expect(valid).toBeGreaterThan(500);
    expect(invalid).toBeGreaterThan(300);
  });

  it('agrees with trying every order on random answers, clock ties and many unknown outcomes', () => {
    // Unlike simulate(), nothing here is linearizable by construction: every answer is any value of
    // the history (or absent), calls start and end on a coarse clock (so many intervals touch), and
    // a third of the calls got no answer.
    let valid = 0;
    let invalid = 0;
    for (let seed = 1; seed <= 10_000; seed++) {
      const h = randomHistory(seed, 3 + (seed % 4));
      const expected = bruteForce(h);
      expect(checkRegister(h).ok, JSON.stringify(h, (_, v: unknown) => (v === Infinity ? 'never' : v))).toBe(expected);
      if (expected) valid++;
      else invalid++;
    }
    expect(valid).toBeGreaterThan(2000);
    expect(invalid).toBeGreaterThan(2000);
  });
});

/** `count` calls with random kinds, intervals on a clock of 8 ticks, answers and unknown outcomes. Seeded. */
function randomHistory(seed: number, count: number): HistoryOp[] {
  let s = seed * 7919 + 13;
  const rand = (): number => {
    s = (s * 1103515245 + 12345) & 0x7fffffff;
    return s / 0x7fffffff;
  };
  const below = (n: number): number => Math.floor(rand() * n);
  const history: HistoryOp[] = [];
  for (let i = 0; i < count; i++) {
    const call = below(8);
    const ret = rand() < 0.3 ? Infinity : call + below(4);
    const dice = rand();
    history.push(dice < 0.45 ? { kind: 'put', value: `v${i}`, call, ret } : dice < 0.6 ? { kind: 'delete', call, ret } : { kind: 'get', call, ret });
  }
  const values: Value[] = [null, ...history.filter((o) => o.kind === 'put').map((o) => o.value!)];
  for (const o of history) if (o.ret !== Infinity && o.kind !== 'delete') o.out = values[below(values.length)];
  return history.sort((a, b) => a.call - b.call);
}

/** Every subset of the unanswered writes, every order: linearizable if one replays. Tiny histories only. */
function bruteForce(history: HistoryOp[]): boolean {
  const ops = history.filter((o) => !(o.kind === 'get' && (o.ret === Infinity || o.out === undefined)));
  const unknown = ops.filter((o) => o.ret === Infinity);
  const known = ops.filter((o) => o.ret !== Infinity);
  const replays = (order: HistoryOp[]): boolean => {
    let state: Value = null;
    for (const o of order) {
      if (o.kind === 'get' && o.out !== state) return false;
      if (o.kind === 'put' && o.ret !== Infinity && o.out !== undefined && o.out !== state) return false;
      state = o.kind === 'put' ? o.value! : o.kind === 'delete' ? null : state;
    }
    return true;
  };
  const permute = (rest: HistoryOp[], order: HistoryOp[]): boolean => {
    if (rest.length === 0) return replays(order);
    return rest.some((o, i) => {
      // Real time: o may go next only if nothing left returned before o began.
      if (rest.some((p) => p !== o && p.ret < o.call)) return false;
      return permute([...rest.slice(0, i), ...rest.slice(i + 1)], [...order, o]);
    });
  };
  for (let mask = 0; mask < 1 << unknown.length; mask++) {
    if (permute([...known, ...unknown.filter((_, i) => mask & (1 << i))], [])) return true;
  }
  return false;
}

/**
 * A linearizable history by construction: `clients` closed-loop clients on one register, each call
 * taking effect at a random instant inside its interval, answers computed in that order. A share of
 * the writes get no answer (their effect happens later, or not at all). Deterministic (seeded).
 */
function simulate(count: number, clients: number, seed: number, unknownRate = 0.01): { history: HistoryOp[]; overwritten: { value: string; doneAt: number }[] } {
  let s = seed;
  const rand = (): number => {
    s = (s * 1103515245 + 12345) & 0x7fffffff;
    return s / 0x7fffffff;
  };
  const pending: { op: HistoryOp; at: number; lands: boolean }[] = [];
  const clock = new Array<number>(clients).fill(0);
  for (let i = 0; i < count; i++) {
    const c = i % clients;
    const call = clock[c] + rand() * 2;
    const ret = call + 0.5 + rand() * 6;
    clock[c] = ret;
    const dice = rand();
    const op: HistoryOp = dice < 0.4 ? { kind: 'put', value: `v${i}`, call, ret } : dice < 0.5 ? { kind: 'delete', call, ret } : { kind: 'get', call, ret };
    const unknown = op.kind !== 'get' && rand() < unknownRate;
    if (unknown) op.ret = Infinity;
    // An unknown write lands later than its caller waited, or never.
    pending.push({ op, at: unknown ? ret + rand() * 20 : call + rand() * (ret - call), lands: !unknown || rand() < 0.5 });
  }
  pending.sort((a, b) => a.at - b.at);
  let state: Value = null;
  const overwritten: { value: string; doneAt: number }[] = [];
  let lastWriteOf: { value: string } | undefined;
  for (const p of pending) {
    if (!p.lands) continue;
    if (p.op.kind === 'get') p.op.out = state;
    else {
      if (p.op.kind === 'put' && p.op.ret !== Infinity) p.op.out = state;
      if (lastWriteOf && p.op.ret !== Infinity) overwritten.push({ value: lastWriteOf.value, doneAt: p.op.ret });
      state = p.op.kind === 'put' ? p.op.value! : null;
      lastWriteOf = state === null ? undefined : { value: state };
    }
  }
  return { history: pending.map((p) => p.op).sort((a, b) => a.call - b.call), overwritten };
}
