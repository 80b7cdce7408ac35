// The public KeyValueStore API served by one worker itself, without a gateway (`--direct-api`, off by
// default). It exists for benchmarking — `npm run bench` sends the same load here and through the
// gateway, so the gateway's cost is a ratio from one run — and for a single-node store. It is not a
// cluster member's normal face: with several workers, clients must go through the gateway, or keys
// land on the wrong worker.
//
// It uses the same validation, status mapping and store as the gateway path, and gathers the
// requests of one event-loop turn into one transaction exactly as the gateway's exchange does, so the
// comparison measures the hop, not a different storage strategy (with --sync full a commit per
// request would make the direct path look slower than it is).
import * as grpc from '@grpc/grpc-js';
import { KvError, notFound, toServiceError } from '../shared/errors.js';
import type { Logger } from '../shared/logger.js';
import { OpType, type Op, type OpResult, type OpTypeValue } from '../shared/proto.js';
import { pageLimit } from '../shared/paging.js';
import { checkKey, checkValue } from '../shared/validation.js';
import type { Snapshotter } from './snapshot.js';
import type { Store } from './store.js';

const SCAN_CHUNK = 5000;

type Callback<T> = grpc.sendUnaryData<T>;

interface Waiting {
  resolve(r: OpResult): void;
}

export interface DirectApiDeps {
  name: string;
  store: Store;
  snapshots: Snapshotter;
  log: Logger;
  /** Called once per applied batch (for the worker's op metrics); undefined when metrics are off. */
  onBatch?: (ops: Op[], results: OpResult[], seconds: number) => void;
}

export function directApi(deps: DirectApiDeps): grpc.UntypedServiceImplementation {
  const { store, log } = deps;
  let queue: Op[] = [];
  let waiting: Waiting[] = [];
  let scheduled = false;
  let nextId = 1;

  const flush = (): void => {
    scheduled = false;
    const ops = queue;
    const w = waiting;
    queue = [];
    waiting = [];
    const start = deps.onBatch ? performance.now() : 0;
    const results = store.applyBatch(ops);
    if (deps.onBatch) deps.onBatch(ops, results, (performance.now() - start) / 1000);
    for (let i = 0; i < w.length; i++) w[i].resolve(results[i]);
  };

  const apply = (type: OpTypeValue, key: string, value: string): Promise<OpResult> =>
    new Promise((resolve) => {
      queue.push({ id: nextId++ & 0xffffffff, type, key, value });
      waiting.push({ resolve });
      if (!scheduled) {
        scheduled = true;
        setImmediate(flush);
      }
    });

  const fail = (cb: Callback<never>, err: unknown): void => cb(toServiceError(err, log));
  const storeFailure = (r: OpResult): KvError => new KvError(r.code, `worker ${deps.name}: ${r.message || grpc.status[r.code]}`);

  const allKeys = (): string[] => {
    const out: string[] = [];
    let after = '';
    for (;;) {
      const keys = store.scan(after, SCAN_CHUNK);
      for (const k of keys) out.push(k);
      if (keys.length < SCAN_CHUNK) return out;
      after = keys[keys.length - 1];
    }
  };

  return {
    Put(call: grpc.ServerUnaryCall<{ key: string; value: string }, unknown>, cb: Callback<{ old_value: string }>) {
      let key: string, value: string;
      try {
        key = checkKey(call.request.key);
        value = checkValue(call.request.value);
      } catch (err) {
        return fail(cb, err);
      }
      void apply(OpType.PUT, key, value).then((r) => (r.code === grpc.status.OK ? cb(null, { old_value: r.found ? r.value : '' }) : fail(cb, storeFailure(r))));
    },
    Get(call: grpc.ServerUnaryCall<{ key: string }, unknown>, cb: Callback<{ value: string }>) {
      let key: string;
      try {
        key = checkKey(call.request.key);
      } catch (err) {
        return fail(cb, err);
      }
      void apply(OpType.GET, key, '').then((r) => {
        if (r.code === grpc.status.OK) cb(null, { value: r.value });
        else fail(cb, r.code === grpc.status.NOT_FOUND ? notFound(key) : storeFailure(r));
      });
    },
    Delete(call: grpc.ServerUnaryCall<{ key: string }, unknown>, cb: Callback<object>) {
      let key: string;
      try {
        key = checkKey(call.request.key);
      } catch (err) {
        return fail(cb, err);
      }
      void apply(OpType.DELETE, key, '').then((r) => (r.code === grpc.status.OK ? cb(null, {}) : fail(cb, storeFailure(r))));
    },
    ListKeys(_call: grpc.ServerUnaryCall<object, unknown>, cb: Callback<{ keys: string[] }>) {
      try {
        cb(null, { keys: allKeys() });
      } catch (err) {
        fail(cb, err);
      }
    },
    ListKeysPage(call: grpc.ServerUnaryCall<{ after: string; limit: number }, unknown>, cb: Callback<{ keys: string[]; next_after: string; done: boolean }>) {
      try {
        const limit = pageLimit(call.request.limit);
        const keys = store.scan(call.request.after ?? '', limit + 1);
        const done = keys.length <= limit;
        if (!done) keys.length = limit;
        cb(null, { keys, next_after: keys.length > 0 ? keys[keys.length - 1] : '', done });
      } catch (err) {
        fail(cb, err);
      }
    },
    Backup(_call: grpc.ServerUnaryCall<object, unknown>, cb: Callback<{ success: boolean; message: string }>) {
      const id = new Date().toISOString().replace(/[-:]/g, '').replace('.', '');
      deps.snapshots.take(id).then(
        (r) => cb(null, { success: true, message: `backup ${id} complete: ${deps.name}, ${r.keys} keys, ${r.bytes} bytes in ${r.file}` }),
        (err: unknown) => {
          log.error({ err, backupId: id }, 'direct backup failed');
          cb(null, { success: false, message: `backup ${id} failed: ${deps.name}: ${(err as Error).message}` });
        },
      );
    },
  };
}

