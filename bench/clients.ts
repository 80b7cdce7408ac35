// The client a load thread (and the preload) drives: kvstore's public KeyValueStore API, or etcd's own
// v3 KV API for `--etcd`. Both are grpc-js clients on one channel with the same options, called the
// same way, so latency and op counting stay identical; only the request and answer messages differ.
import * as grpc from '@grpc/grpc-js';
import { publicClientOptions } from '../shared/grpc-options.js';
import { loadPackageDefinition, publicApi } from '../shared/proto.js';

export type Protocol = 'kvstore' | 'etcd';
export type Done = (err: grpc.ServiceError | null) => void;

export interface BenchClient {
  get(key: string, opts: grpc.CallOptions, done: Done): void;
  put(key: string, value: string, opts: grpc.CallOptions, done: Done): void;
  delete(key: string, opts: grpc.CallOptions, done: Done): void;
  listKeys(opts: grpc.CallOptions, done: Done): void;
  waitForReady(deadline: number, cb: (err?: Error) => void): void;
  close(): void;
}

type Cb<T> = (err: grpc.ServiceError | null, res?: T) => void;
interface KvClient extends grpc.Client {
  Get(req: { key: string }, opts: grpc.CallOptions, cb: Cb<{ value: string }>): void;
  Put(req: { key: string; value: string }, opts: grpc.CallOptions, cb: Cb<{ old_value: string }>): void;
  Delete(req: { key: string }, opts: grpc.CallOptions, cb: Cb<object>): void;
  ListKeys(req: object, opts: grpc.CallOptions, cb: Cb<{ keys: string[] }>): void;
}

interface EtcdKeyValue {
  key: Buffer;
  value: Buffer;
  mod_revision: number;
}
interface EtcdKvClient extends grpc.Client {
  Range(req: { key: Buffer }, opts: grpc.CallOptions, cb: Cb<{ kvs: EtcdKeyValue[]; count: number }>): void;
  Put(req: { key: Buffer; value: Buffer; prev_kv: boolean }, opts: grpc.CallOptions, cb: Cb<{ prev_kv: EtcdKeyValue | null }>): void;
}

let etcdKv: grpc.ServiceClientConstructor | undefined;
function etcdKvCtor(): grpc.ServiceClientConstructor {
  if (!etcdKv) {
    // bench/etcd-kv.proto sits beside proto/ in the source tree (compiled code runs from dist/bench).
    const pkg = grpc.loadPackageDefinition(loadPackageDefinition('../bench/etcd-kv.proto')) as unknown as {
      etcdserverpb: { KV: grpc.ServiceClientConstructor };
    };
    etcdKv = pkg.etcdserverpb.KV;
  }
  return etcdKv;
}

/** A Range that found nothing is etcd's "not found"; kvstore answers NOT_FOUND, and the bench counts both alike. */
function notFound(): grpc.ServiceError {
  return Object.assign(new Error(`${grpc.status.NOT_FOUND} NOT_FOUND: key not found`), {
    code: grpc.status.NOT_FOUND,
    details: 'key not found',
    metadata: new grpc.Metadata(),
  });
}

function unsupported(what: string): never {
  throw new Error(`${what} is not part of the etcd comparison (get, put and mix are)`);
}

export function benchClient(protocol: Protocol, address: string): BenchClient {
  const credentials = grpc.credentials.createInsecure();
  if (protocol === 'etcd') {
    const c = new (etcdKvCtor())(address, credentials, publicClientOptions) as unknown as EtcdKvClient;
    return {
      get: (key, opts, done) => c.Range({ key: Buffer.from(key) }, opts, (err, res) => done(err ?? (res!.kvs.length > 0 ? null : notFound()))),
      // prev_kv: kvstore's Put answers with the previous value, so etcd does the same work.
      put: (key, value, opts, done) => c.Put({ key: Buffer.from(key), value: Buffer.from(value), prev_kv: true }, opts, (err) => done(err)),
      delete: () => unsupported('delete'),
      listKeys: () => unsupported('listkeys'),
      waitForReady: (deadline, cb) => c.waitForReady(deadline, cb),
      close: () => c.close(),
    };
  }
  const c = new (publicApi().KeyValueStore)(address, credentials, publicClientOptions) as unknown as KvClient;
  return {
    get: (key, opts, done) => c.Get({ key }, opts, done),
    put: (key, value, opts, done) => c.Put({ key, value }, opts, done),
    delete: (key, opts, done) => c.Delete({ key }, opts, done),
    listKeys: (opts, done) => c.ListKeys({}, opts, done),
    waitForReady: (deadline, cb) => c.waitForReady(deadline, cb),
    close: () => c.close(),
  };
}
