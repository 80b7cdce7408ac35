// Structured JSON logs, one line per event. The default level logs lifecycle events and errors only;
// successful requests are never logged at info, so logs stay quiet under load.
import { pino, type Logger } from 'pino';

export type { Logger };

export function createLogger(component: string, level: string, extra: Record<string, unknown> = {}): Logger {
  return pino({
    level,
    base: { component, pid: process.pid, ...extra },
    timestamp: pino.stdTimeFunctions.isoTime,
    formatters: { level: (label) => ({ level: label }) },
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
  });
}
