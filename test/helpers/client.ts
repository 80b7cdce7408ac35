// Promise-style client of the public API over real gRPC, for tests.
import * as grpc from '@grpc/grpc-js';
import { publicClientOptions } from '../../shared/grpc-options.js';
import { publicApi } from '../../shared/proto.js';

export interface KvClient {
  put(key: string, value: string): Promise<string>;
  get(key: string): Promise<string>;
  del(key: string): Promise<void>;
  list(): Promise<string[]>;
  backup(): Promise<{ success: boolean; message: string }>;
  raw: grpc.Client;
  close(): void;
}

type Cb<T> = (err: grpc.ServiceError | null, res?: T) => void;
type Method = (req: object, opts: grpc.CallOptions, cb: Cb<Record<string, unknown>>) => void;

/** `credentials` defaults to plaintext; clientCredentials() in shared/tls.ts makes TLS ones. */
export function kvClient(address: string, timeoutMs = 10_000, credentials = grpc.credentials.createInsecure()): KvClient {
  const Ctor = publicApi().KeyValueStore;
  // Tests restart servers; reconnect within a second rather than grpc-js's default backoff (up to 120 s).
  const raw = new Ctor(address, credentials, {
    ...publicClientOptions,
    'grpc.initial_reconnect_backoff_ms': 200,
    'grpc.max_reconnect_backoff_ms': 1000,
  });
  const call = <T>(method: string, req: object): Promise<T> =>
    new Promise((resolve, reject) => {
      const fn = (raw as unknown as Record<string, Method>)[method].bind(raw);
      fn(req, { deadline: Date.now() + timeoutMs }, (err, res) => (err ? reject(err) : resolve(res as T)));
    });
  return {
    put: (key, value) => call<{ old_value: string }>('Put', { key, value }).then((r) => r.old_value),
    get: (key) => call<{ value: string }>('Get', { key }).then((r) => r.value),
    del: (key) => call<object>('Delete', { key }).then(() => undefined),
    list: () => call<{ keys: string[] }>('ListKeys', {}).then((r) => r.keys),
    backup: () => call<{ success: boolean; message: string }>('Backup', {}),
    raw,
    close: () => raw.close(),
  };
}

/** The gRPC status code a promise rejects with (or 'ok'). */
export async function codeOf(p: Promise<unknown>): Promise<number | 'ok'> {
  try {
    await p;
    return 'ok';
  } catch (err) {
    return (err as grpc.ServiceError).code;
  }
}

export async function errorOf(p: Promise<unknown>): Promise<grpc.ServiceError> {
  try {
    await p;
  } catch (err) {
    return err as grpc.ServiceError;
  }
  throw new Error('expected the call to fail, but it succeeded');
}

export { grpc };

/** Static keys `fill/0..count-1` with value `f:<key>` that a verifying load never touches, written `chunk` at a time. */
export async function putFiller(kv: KvClient, count: number, chunk: number): Promise<string[]> {
  const keys = Array.from({ length: count }, (_, i) => `fill/${i}`);
  for (let i = 0; i < keys.length; i += chunk) await Promise.all(keys.slice(i, i + chunk).map((k) => kv.put(k, `f:${k}`)));
  return keys;
}

/** The values of `keys`, read `chunk` at a time (for comparing with `f:<key>`). */
export async function getAll(kv: KvClient, keys: string[], chunk: number): Promise<string[]> {
  const values: string[] = [];
  for (let i = 0; i < keys.length; i += chunk) values.push(...(await Promise.all(keys.slice(i, i + chunk).map((k) => kv.get(k)))));
  return values;
}
