// A linearizability checker for kvstore's keys, in the manner of Knossos and Porcupine: a history of
// concurrent Put/Get/Delete calls on one key is linearizable when some order of them respects real
// time (a call that returned before another began comes first) and replays on a single register to
// exactly the answers the clients saw. Unlike test/helpers/checker.ts (one writer per key), any number
// of clients may write the same key, so a lost update, a stale read through a second gateway or two
// Puts answering with the same previous value are caught.
//
// The search is Wing & Gong's, with Lowe's memoisation of (set of calls placed, register value).
// A call whose outcome is unknown (a write that failed with any status) may take effect at any time
// after it began, or never; a failed Get is dropped, since it showed nothing.

/** The register's value: a string, or null when the key is absent. */
export type Value = string | null;

export interface HistoryOp {
  kind: 'put' | 'get' | 'delete';
  /** put: the value written (unique in the history, never empty). */
  value?: string;
  /** get: the value read; put: the previous value it returned. Undefined when the outcome is unknown. */
  out?: Value;
  /** When the client invoked the call and when the answer arrived (one clock); ret is Infinity if no answer. */
  call: number;
  ret: number;
  /** Who ran it, for the report. */
  client?: string;
}

export interface Verdict {
  ok: boolean;
  /** True when the search ran out of budget: neither proven nor refuted. */
  inconclusive: boolean;
  ops: number;
  /** Writes whose outcome was unknown. */
  unknown: number;
  explored: number;
  /** When not linearizable: the calls around the point where every order failed. */
  detail?: string;
}

interface Entry {
  op: HistoryOp;
  call: number;
  ret: number;
  /** Must be placed (answered, or proven to have happened); optional ones may be left out. */
  required: boolean;
}

/** Prepares one key's history: drops what showed nothing and bounds unknown writes that were seen. */
function entries(history: HistoryOp[]): Entry[] {
  const observedAt = new Map<string, number>();
  for (const op of history) {
    if (op.ret === Infinity || op.out === undefined || op.out === null) continue;
    if (op.kind === 'get' || op.kind === 'put') observedAt.set(op.out, Math.min(observedAt.get(op.out) ?? Infinity, op.ret));
  }
  const out: Entry[] = [];
  for (const op of history) {
    const answered = op.ret !== Infinity;
    if (op.kind === 'get' && (!answered || op.out === undefined)) continue;
    if (answered) {
      out.push({ op, call: op.call, ret: op.ret, required: true });
      continue;
    }
    if (op.kind === 'put') {
      // Values are unique, so a value somebody read proves this Put happened, before that read
      // returned. A Put nobody saw is left out: placing it could only be followed by writes that
      // overwrite it, so it never changes the verdict, and each optional call doubles the search.
      const seen = observedAt.get(op.value!);
      if (seen !== undefined) out.push({ op, call: op.call, ret: Math.max(seen, op.call), required: true });
      continue;
    }
    out.push({ op, call: op.call, ret: Infinity, required: false });
  }
  return out.sort((a, b) => a.call - b.call);
}

/** The register after `op` from `state`, or undefined when `op` could not have run there. */
function step(op: HistoryOp, answered: boolean, state: Value): Value | undefined {
  switch (op.kind) {
    case 'get':
      return op.out === state ? state : undefined;
    case 'put':
      if (answered && op.out !== undefined && op.out !== state) return undefined;
      return op.value!;
    case 'delete':
      return null;
  }
}

function describeOp(e: Entry): string {
  const o = e.op;
  const what = o.kind === 'put' ? `put ${o.value}` : o.kind;
  const answer = o.ret === Infinity ? 'unknown' : o.out === undefined ? 'ok' : o.out === null ? '<absent>' : o.out;
  const ret = o.ret === Infinity ? '∞' : o.ret.toFixed(1);
  return `${o.client ?? '?'} ${what} -> ${answer} [${o.call.toFixed(1)}, ${ret}]`;
}

/**
 * Checks one key's history against a register that starts at `initial`.
 * `budget` bounds the states visited; a well-behaved history needs about one per call.
 */
export function checkRegister(history: HistoryOp[], initial: Value = null, budget = 2_000_000): Verdict {
  const es = entries(history);
  const n = es.length;
  const placed = new Uint8Array(n);
  const optional = es.map((e, i) => (e.required ? -1 : i)).filter((i) => i >= 0);
  const requiredTotal = es.filter((e) => e.required).length;
  let requiredLeft = requiredTotal;
  let first = 0; // every required entry before `first` is placed
  const seen = new Set<string>();
  let explored = 0;
  // Where the search got furthest, for the report: the register then, and the call it could not place.
  let deepest = -1;
  let deepestState: Value = initial;
  let blocking = -1;
  let exhausted = false;

  const advance = (): void => {
    while (first < n && (placed[first] || !es[first].required)) first++;
  };

  // The set of placed calls is "every required call before `first`", plus the few placed after it,
  // plus the optional ones placed: listing only those keeps the memo key short on long histories.
  // A placed call was in the window when placed, and the window only widens along a search path.
  const memoKey = (state: Value, end: number): string => {
    let k = `${first}`;
    for (const i of optional) if (i < first && placed[i]) k += `,${i}`;
    for (let i = first; i < n && es[i].call <= end; i++) if (placed[i]) k += `,${i}`;
    return `${k}|${state === null ? '\u0000' : state}`;
  };

  // Only calls that began before the earliest answer among unplaced required calls may go next.
  const windowEnd = (): number => {
    let min = Infinity;
    for (let i = first; i < n && es[i].call <= min; i++) if (!placed[i] && es[i].required && es[i].ret < min) min = es[i].ret;
    return min;
  };

  interface Frame {
    state: Value;
    candidates: number[];
    next: number;
    /** The call placed to reach this frame, the reads placed with it, and `first` before them. */
    via: number;
    greedy: number[];
    firstBefore: number;
  }

  const place = (i: number): void => {
    placed[i] = 1;
    if (es[i].required) requiredLeft--;
  };
  const unplace = (i: number): void => {
    placed[i] = 0;
    if (es[i].required) requiredLeft++;
  };
  const undo = (f: { via: number; greedy: number[]; firstBefore: number }): void => {
    for (const i of f.greedy) unplace(i);
    if (f.via >= 0) unplace(f.via);
    first = f.firstBefore;
  };

  // A read that may go next and matches the register is placed at once: a read changes nothing
  // wherever it goes, so placing it later can never help (it only narrows the window). Not so a
  // Delete of an absent key: placed later it may be the one that empties the key. Without this, k
  // concurrent reads of one value are visited as 2^k subsets.
  const placeHarmless = (state: Value): number[] => {
    const greedy: number[] = [];
    for (let more = true; more; ) {
      more = false;
      const end = windowEnd();
      for (let i = first; i < n && es[i].call <= end; i++) {
        const o = es[i].op;
        if (placed[i] || !es[i].required) continue;
        if (o.kind === 'get' && o.out === state) {
          place(i);
          greedy.push(i);
          more = true;
        }
      }
      advance();
    }
    return greedy;
  };

  // Visits a state: its frame, 'done' when every required call is placed, or undefined (seen before,
  // or out of budget) after undoing its own placements.
  const enter = (state: Value, via: number, firstBefore: number): Frame | 'done' | undefined => {
    const greedy = placeHarmless(state);
    if (requiredLeft === 0) return 'done';
    const end = windowEnd();
    const key = memoKey(state, end);
    if (++explored > budget) exhausted = true;
    if (exhausted || seen.has(key)) {
      for (const i of greedy) unplace(i);
      return undefined;
    }
    seen.add(key);
    if (requiredTotal - requiredLeft > deepest) {
      deepest = requiredTotal - requiredLeft;
      deepestState = state;
      blocking = -1;
      for (let i = first; i < n && es[i].call <= end; i++) if (!placed[i] && es[i].required && es[i].ret === end) blocking = i;
    }
    const candidates: number[] = [];
    // Unanswered Deletes all do the same thing, so only the earliest unplaced one is tried, and
    // never on an absent key, where it changes nothing.
    if (state !== null) {
      const d = optional.find((i) => !placed[i] && es[i].call <= end);
      if (d !== undefined) candidates.push(d);
    }
    for (let i = first; i < n && es[i].call <= end; i++) if (!placed[i] && es[i].required) candidates.push(i);
    return { state, candidates, next: 0, via, greedy, firstBefore };
  };

  // Depth-first with an explicit stack: a history of thousands of calls is thousands of levels deep.
  const search = (initialState: Value): boolean => {
    const root = enter(initialState, -1, first);
    if (root === 'done') return true;
    if (!root) return false;
    const stack: Frame[] = [root];
    while (stack.length > 0) {
      const top = stack[stack.length - 1];
      if (top.next >= top.candidates.length) {
        stack.pop();
        undo(top);
        continue;
      }
      const i = top.candidates[top.next++];
      const next = step(es[i].op, es[i].ret !== Infinity, top.state);
      if (next === undefined) continue;
      const firstBefore = first;
      place(i);
      advance();
      const child = enter(next, i, firstBefore);
      if (child === 'done') return true;
      if (exhausted) return false;
      if (child) stack.push(child);
      else undo({ via: i, greedy: [], firstBefore });
    }
    return false;
  };

  advance();
  const ok = search(initial);
  const unknown = history.filter((o) => o.kind !== 'get' && o.ret === Infinity).length;
  const verdict: Verdict = { ok, inconclusive: exhausted, ops: n, unknown, explored };
  if (!ok && !exhausted) {
    const show = (v: Value): string => (v === null ? '<absent>' : v);
    const at = Math.max(blocking, 0);
    const around = es.slice(Math.max(0, at - 6), at + 6).map((e) => `${e === es[blocking] ? '> ' : '  '}${describeOp(e)}`);
    verdict.detail = `after ${deepest} of ${requiredTotal} calls (register ${show(deepestState)}), no order places ${blocking >= 0 ? describeOp(es[blocking]) : 'the next call'}; calls around it:\n${around.join('\n')}`;
  }
  return verdict;
}

/** Checks every key's history; keys are independent registers (linearizability is compositional). */
export function checkHistory(byKey: Map<string, HistoryOp[]>, budget?: number): Map<string, Verdict> {
  const out = new Map<string, Verdict>();
  for (const [key, ops] of byKey) out.set(key, checkRegister(ops, null, budget));
  return out;
}
