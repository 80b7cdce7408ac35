// At most one log line per interval for an event that can repeat thousands of times a second (a full
// disk failing every write, a client hammering an admin RPC with a wrong token): the log stays
// readable, and the line that is written says how many it stands for. Metrics count every one.
export class LogLimiter {
  // Monotonic: a wall clock stepped back would hold every line back until it caught up.
  private last = Number.NEGATIVE_INFINITY;
  private held = 0;

  constructor(private readonly intervalMs = 1000) {}

  /** How many events were held back since the last line if this one may be logged, else undefined. */
  take(now = performance.now()): number | undefined {
    if (now - this.last < this.intervalMs) {
      this.held++;
      return undefined;
    }
    const held = this.held;
    this.held = 0;
    this.last = now;
    return held;
  }
}
