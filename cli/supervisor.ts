// Runs the embedded store on one machine: N workers and a gateway as child processes, restarting any
// that dies (with backoff), and stopping all of them cleanly (gateway first, so it drains in-flight
// requests while the workers are still up) on SIGINT/SIGTERM.
import { fork, type ChildProcess } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import type { Logger } from '../shared/logger.js';
import { TIMER_MS } from '../shared/settings.js';

export interface ChildSpec {
  name: string;
  script: string;
  args: string[];
  /** How long a stop waits for the child to exit after SIGTERM before SIGKILL. */
  stopTimeoutMs: number;
  /** Variables of the supervisor's environment this child must not inherit (secrets it has no use for). */
  withoutEnv?: string[];
}

interface Listening {
  type: 'listening';
  name: string;
  port: number;
  metricsPort: number;
}

/**
 * What a stopping child needs beyond its --shutdown-grace-ms: closing worker links (1 s), the
 * database and the HTTP server. A fixed 15 s used to cut a grace above 10 s short with SIGKILL.
 */
export const STOP_MARGIN_MS = 5_000;

/**
 * How long to wait for a child given its shutdown grace: the grace plus the margin, capped where
 * Node's timers end (2^31-1 ms; a larger delay fires at once, which killed every child on stop).
 */
export function stopTimeoutFor(graceMs: number): number {
  return Math.min(graceMs + STOP_MARGIN_MS, TIMER_MS.max);
}
const MAX_BACKOFF_MS = 5_000;

export const scriptPath = (relative: string): string => fileURLToPath(new URL(relative, import.meta.url));

export class Supervised {
  child: ChildProcess | undefined;
  private restarts = 0;
  private startedAt = 0;
  private stopping = false;
  /** Listening at least once: from then on any exit is restarted, also a restart that dies early. */
  private hasListened = false;
  listening: Listening | undefined;

  constructor(
    private spec: ChildSpec,
    private readonly log: Logger,
  ) {}

  /** Starts the child and resolves once it reports its bound ports. */
  start(): Promise<Listening> {
    return new Promise((resolve, reject) => {
      this.startedAt = Date.now();
      // In its own process group: Ctrl-C in a terminal signals the whole foreground group, and children
      // that got it too would stop at once, while the gateway still drains calls that need them; the
      // supervisor stops them in order instead. A child whose supervisor dies stops itself when the IPC
      // channel closes (shared/lifecycle.ts).
      const env = { ...process.env };
      for (const name of this.spec.withoutEnv ?? []) delete env[name];
      const child = fork(this.spec.script, this.spec.args, { stdio: ['ignore', 'inherit', 'inherit', 'ipc'], detached: true, env });
      this.child = child;
      let reported = false;
      child.on('message', (msg: Listening) => {
        if (msg?.type !== 'listening') return;
        reported = true;
        this.hasListened = true;
        this.listening = msg;
        resolve(msg);
      });
      child.on('exit', (code, signal) => {
        if (this.child === child) this.child = undefined;
        if (!reported) reject(new Error(`${this.spec.name} exited before listening (${code !== null ? `exit code ${code}; its own log line above says why` : `signal ${signal}`})`));
        // The first start's failure is the caller's to report; after that, a restart that dies before
        // listening (its port still held, a disk briefly full) is retried like any other exit.
        if (this.stopping || !this.hasListened) return;
        // A child that ran a while resets the backoff; one that keeps dying backs off up to 5 s.
        if (Date.now() - this.startedAt > 30_000) this.restarts = 0;
        const delay = Math.min(MAX_BACKOFF_MS, 100 * 2 ** this.restarts++);
        this.log.warn({ child: this.spec.name, code, signal, restartInMs: delay }, 'child exited; restarting');
        setTimeout(() => {
          if (this.stopping) return;
          this.start().catch((err: unknown) => {
            if (!this.stopping) this.log.error({ child: this.spec.name, err }, 'restart failed; retrying');
          });
        }, delay);
      });
    });
  }

  /** Pins the ports a restarted child must reuse, so the gateway's addresses stay right. */
  pin(args: string[]): void {
    this.spec = { ...this.spec, args };
  }

  /** No restarts from now on: the store is stopping, and this child's turn to be stopped may come later. */
  hold(): void {
    this.stopping = true;
  }

  async stop(): Promise<void> {
    this.stopping = true;
    const child = this.child;
    if (!child || child.exitCode !== null) return;
    await new Promise<void>((resolve) => {
      const timer = setTimeout(() => {
        this.log.warn({ child: this.spec.name, stopTimeoutMs: this.spec.stopTimeoutMs }, 'child did not stop in time; killing');
        child.kill('SIGKILL');
      }, this.spec.stopTimeoutMs);
      child.once('exit', () => {
        clearTimeout(timer);
        resolve();
      });
      child.kill('SIGTERM');
    });
  }
}
