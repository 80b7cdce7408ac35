// The bench's per-process counters read from /proc, checked against this very process.
import { describe, expect, it } from 'vitest';
import { switchesBetween, threadSwitches } from '../bench/procstat.js';

describe('context switches from /proc', () => {
  it('counts this process sleeping on a timer as wake-ups of its main thread', async () => {
    const before = threadSwitches(process.pid);
    expect(before.get(String(process.pid))).toBeDefined();
    for (let i = 0; i < 5; i++) await new Promise((r) => setTimeout(r, 20));
    const between = switchesBetween(before, threadSwitches(process.pid));
    expect(between.woken).toBeGreaterThanOrEqual(5);
    expect(between.preempted).toBeGreaterThanOrEqual(0);
  });

  it('differences thread by thread: a thread that ended drops out, one that started counts from 0', () => {
    const before = new Map([
      ['1', { woken: 100, preempted: 10 }],
      ['2', { woken: 5000, preempted: 300 }], // ends before the second reading
    ]);
    const after = new Map([
      ['1', { woken: 130, preempted: 12 }],
      ['3', { woken: 7, preempted: 1 }], // started in between
    ]);
    expect(switchesBetween(before, after)).toEqual({ woken: 37, preempted: 3 });
  });

  it('is NaN for a process that is gone', () => {
    const gone = threadSwitches(2 ** 22 + 12345); // above pid_max's default ceiling: never a live pid
    expect(gone.size).toBe(0);
    expect(switchesBetween(gone, gone).woken).toBeNaN();
  });
});
