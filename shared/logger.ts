// Structured JSON logs, one line per event. The default level logs lifecycle events and errors only;
// successful requests are never logged at info, so logs stay quiet under load.
import { pino, type Logger } from 'pino';

export type { Logger };

export function createLogger(component: string, level: string, extra: Record<string, unknown> = {}): Logger {
  const options = {
    level,
    base: { component, pid: process.pid, ...extra },
    timestamp: pino.stdTimeFunctions.isoTime,
    formatters: { level: (label: string) => ({ level: label }) },
    // Never let a credential reach a log line, whatever object is logged: tokens, authorization
    // headers, and private keys under the names grpc-js and node:tls use for them. Settings hold
    // only file paths; the key material itself lives in Buffers that are never logged
    // (test/secrets-in-logs.test.ts checks the output).
    redact: {
      paths: [
        'token', '*.token', 'adminToken', '*.adminToken', 'authorization', '*.authorization',
        'key_pem', '*.key_pem', 'private_key', '*.private_key', 'privateKey', '*.privateKey',
      ],
      censor: '[redacted]',
    },
  };
  // Synchronous writes to stdout. pino's default buffers and flushes at exit with sonic-boom's
  // flushSync, which retries EPIPE every 100 ms forever: a process whose stdout reader had gone
  // (`npm start | tee log` stopped with Ctrl-C, a dead log shipper) logged "stopped" and then never
  // exited. Written at once, a broken pipe turns logging off (pino's EPIPE handler) and exit goes
  // ahead; and no line written before a crash is lost. Logs are lifecycle events only, never one
  // per request, so writing them at once costs nothing measurable.
  return pino(options, pino.destination({ dest: 1, sync: true }));
}
