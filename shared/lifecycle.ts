// How a server process ends: on SIGTERM or SIGINT, and, when `npm start`'s supervisor forked it, when
// the supervisor goes away (even by kill -9: the IPC channel closes). The handlers are installed
// before start-up, so a stop that comes while the process is still starting is not lost: until the
// server hands over its drain-and-exit function there is nothing to drain, and the process exits at
// once. A gateway whose supervisor died while it waited for its (also stopping) workers otherwise
// waited for them forever, holding its port, in a process group no Ctrl-C reaches.
import type { Logger } from './logger.js';

export type Stop = (reason: string) => Promise<void>;

export interface Lifecycle {
  /** Start-up is done: from now on a stop drains through `stop`. */
  serving(stop: Stop): void;
  /** Tells the supervisor (if any) a message; a closed channel is the disconnect path's business. */
  tellSupervisor(message: object): void;
}

export function handleStops(log: Logger): Lifecycle {
  let stop: Stop | undefined;
  const trigger = (reason: string): void => {
    if (stop) return void stop(reason);
    log.info({ signal: reason }, 'stopped during start-up');
    process.exit(0);
  };
  process.on('SIGTERM', () => trigger('SIGTERM'));
  process.on('SIGINT', () => trigger('SIGINT'));
  const supervised = typeof process.send === 'function';
  if (supervised) {
    process.on('disconnect', () => trigger('supervisor gone'));
    // Loading the modules takes a few hundred ms of event-loop turns: a supervisor that died before
    // this line ran has already closed the channel, and 'disconnect' has already been emitted.
    if (!process.connected) setImmediate(() => trigger('supervisor gone'));
  }
  return {
    serving(fn) {
      stop = fn;
    },
    tellSupervisor(message) {
      if (!supervised || !process.connected) return;
      // With a callback, a channel that closes meanwhile is reported here instead of as an 'error'
      // event on process, which would end it with a stack trace.
      process.send!(message, undefined, undefined, (err: Error | null) => {
        if (err) log.debug({ err }, 'supervisor channel closed');
      });
    },
  };
}
