// The one place where a failure becomes a gRPC status. Handlers throw KvError (or let anything else
// escape); toServiceError turns it into what the client sees. Unknown errors become INTERNAL with a
// generic message: the stack goes to the log, never to the client.
import { Metadata, status, type ServiceError } from '@grpc/grpc-js';

export class KvError extends Error {
  constructor(
    readonly code: status,
    message: string,
  ) {
    super(message);
    this.name = 'KvError';
  }
}

export const invalidArgument = (msg: string): KvError => new KvError(status.INVALID_ARGUMENT, msg);
export const notFound = (key: string): KvError => new KvError(status.NOT_FOUND, `key not found: ${JSON.stringify(key)}`);
export const unavailable = (worker: string, why: string): KvError =>
  new KvError(status.UNAVAILABLE, `worker ${worker} is unavailable: ${why}`);
export const deadlineExceeded = (worker: string, ms: number): KvError =>
  new KvError(status.DEADLINE_EXCEEDED, `worker ${worker} did not answer within ${ms} ms`);
export const resourceExhausted = (msg: string): KvError => new KvError(status.RESOURCE_EXHAUSTED, msg);

export function statusName(code: number): string {
  return status[code] ?? `CODE_${code}`;
}

export interface ErrorLogger {
  error(obj: object, msg: string): void;
}

export function toServiceError(err: unknown, log?: ErrorLogger): Partial<ServiceError> {
  if (err instanceof KvError) return { code: err.code, details: err.message, metadata: new Metadata() };
  // A grpc-js ServiceError from a downstream call already carries a meaningful code.
  if (isServiceError(err)) return { code: err.code, details: err.details, metadata: new Metadata() };
  log?.error({ err }, 'unexpected error');
  return { code: status.INTERNAL, details: 'internal error (see server log)', metadata: new Metadata() };
}

export function isServiceError(err: unknown): err is ServiceError {
  return typeof err === 'object' && err !== null && typeof (err as ServiceError).code === 'number' && 'details' in err;
}
