// The public KeyValueStore service: validate, route to the owning worker, map the outcome to a status.
import * as grpc from '@grpc/grpc-js';
import { KvError, invalidArgument, notFound, toServiceError } from '../shared/errors.js';
import type { Logger } from '../shared/logger.js';
import { OpType, type BackupStatus, type OpResult, type OpTypeValue } from '../shared/proto.js';
import { checkKey, checkValue } from '../shared/validation.js';
import type { BackupCoordinator } from './backup.js';
import type { Cluster } from './cluster.js';
import { listKeysPage, type KeyPage } from './list-page.js';
import { requestProblem } from './strict-decode.js';
import type { GatewayMetrics, PublicMethod } from './metrics.js';


type Unary<Req, Res> = (call: grpc.ServerUnaryCall<Req, Res>, cb: grpc.sendUnaryData<Res>) => void;

export interface KvServiceDeps {
  cluster: Cluster;
  backups: BackupCoordinator;
  metrics: GatewayMetrics;
  log: Logger;
  fanoutTimeoutMs: number;
  /** false (KV_METRICS=off): no per-request timing, counting or routing counts on the hot path. */
  metricsOn?: boolean;
}

function workerFailure(r: OpResult, worker: string): KvError {
  return new KvError(r.code, `worker ${worker}: ${r.message || grpc.status[r.code]}`);
}

export function kvService(deps: KvServiceDeps): grpc.UntypedServiceImplementation {
  const { cluster, metrics, log } = deps;
  const metricsOn = deps.metricsOn ?? true;
  const routed = new Map<string, { inc(): void }>();

  // Every public call ends in one of these two: they time it, count it by status code, and turn any
  // failure into the right status. `start` is 0 when metrics are off.
  function succeed<Res>(method: PublicMethod, start: number, cb: grpc.sendUnaryData<Res>, res: Res): void {
    if (metricsOn) metrics.observe(method, grpc.status.OK, (performance.now() - start) / 1000);
    cb(null, res);
  }

  function fail(method: PublicMethod, start: number, cb: grpc.sendUnaryData<never>, err: unknown): void {
    const e = toServiceError(err, log);
    if (metricsOn) metrics.observe(method, e.code!, (performance.now() - start) / 1000);
    if (e.code === grpc.status.INTERNAL) log.error({ method, err }, 'request failed');
    cb(e);
  }

  /** The request, unless strict decoding marked it malformed (INVALID_ARGUMENT naming the problem). */
  function wellFormed<Req>(req: Req): Req {
    const problem = requestProblem(req);
    if (problem) throw invalidArgument(problem);
    return req;
  }

  function handle<Req, Res>(method: PublicMethod, body: (req: Req) => Promise<Res> | Res): Unary<Req, Res> {
    return (call, cb) => {
      const start = metricsOn ? performance.now() : 0;
      let result: Promise<Res> | Res;
      try {
        result = body(wellFormed(call.request));
      } catch (err) {
        return fail(method, start, cb, err);
      }
      Promise.resolve(result).then(
        (res) => succeed(method, start, cb, res),
        (err: unknown) => fail(method, start, cb, err),
      );
    };
  }

  const countRouted = (worker: string): void => {
    let c = routed.get(worker);
    if (!c) {
      c = metrics.routed.labels(worker);
      routed.set(worker, c);
    }
    c.inc();
  };

  // Put, Get and Delete: validate, route, answer, with callbacks from the grpc-js handler to the
  // worker link and back (no promise per request on the gateway's hottest path).
  function point<Req, Res>(method: PublicMethod, type: OpTypeValue, parse: (req: Req) => { key: string; value: string }, reply: (r: OpResult, key: string) => Res): Unary<Req, Res> {
    return (call, cb) => {
      const start = metricsOn ? performance.now() : 0;
      let req: { key: string; value: string };
      try {
        req = parse(wellFormed(call.request));
      } catch (err) {
        return fail(method, start, cb, err);
      }
      cluster.route(type, req.key, req.value, (err, r, worker) => {
        if (err) return fail(method, start, cb, err);
        if (metricsOn) countRouted(worker!);
        if (r!.code !== grpc.status.OK && r!.code !== grpc.status.NOT_FOUND) return fail(method, start, cb, workerFailure(r!, worker!));
        let res: Res;
        try {
          res = reply(r!, req.key);
        } catch (e) {
          return fail(method, start, cb, e);
        }
        succeed(method, start, cb, res);
      });
    };
  }

  return {
    Put: point<{ key: string; value: string }, { old_value: string }>(
      'Put',
      OpType.PUT,
      (req) => ({ key: checkKey(req.key), value: checkValue(req.value) }),
      (r) => ({ old_value: r.found ? r.value : '' }),
    ),
    Get: point<{ key: string }, { value: string }>(
      'Get',
      OpType.GET,
      (req) => ({ key: checkKey(req.key), value: '' }),
      (r, key) => {
        if (r.code === grpc.status.NOT_FOUND) throw notFound(key);
        return { value: r.value };
      },
    ),
    Delete: point<{ key: string }, object>('Delete', OpType.DELETE, (req) => ({ key: checkKey(req.key), value: '' }), () => ({})),
    ListKeys: handle<object, { keys: string[] }>('ListKeys', async () => {
      const end = metrics.fanout.labels('ListKeys').startTimer();
      try {
        return { keys: await cluster.listKeys(deps.fanoutTimeoutMs) };
      } finally {
        end();
      }
    }),
    ListKeysPage: handle<{ after: string; limit: number }, KeyPage>('ListKeysPage', (req) =>
      listKeysPage(cluster, req.after ?? '', req.limit, deps.fanoutTimeoutMs),
    ),
    Backup: handle<object, BackupStatus>('Backup', async () => {
      const end = metrics.fanout.labels('Backup').startTimer();
      const o = await deps.backups.run();
      end();
      return { success: o.success, message: o.message, backup_id: o.id, location: o.dir, keys: o.keys, bytes: o.bytes, failed_workers: o.failedWorkers };
    }),
  };
}
