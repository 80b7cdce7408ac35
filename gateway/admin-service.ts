// The Admin service: membership changes and cluster status for operators (kvctl cluster ...).
import * as grpc from '@grpc/grpc-js';
import { invalidArgument, statusName, toServiceError } from '../shared/errors.js';
import { LogLimiter } from '../shared/log-limiter.js';
import type { Logger } from '../shared/logger.js';
import { participants, type MemberSpec } from '../shared/membership.js';
import type { AdminWorkerStatus, ClusterStatus } from '../shared/proto.js';
import type { Cluster } from './cluster.js';
import { parseMembers } from './members.js';
import type { Mover } from './mover.js';
import { workerStatus } from './worker-rpc.js';

export interface AdminDeps {
  cluster: Cluster;
  mover: Mover;
  log: Logger;
  /** Checks authorisation of an admin call; throws a KvError to refuse it. */
  authorize?: (metadata: grpc.Metadata) => void;
  statusTimeoutMs: number;
  /** Address of a worker given by bare name (Kubernetes: "{name}.kv-worker:50052"). */
  addressTemplate?: string;
  /** Told the status code of every admin call (kv_gateway_admin_requests_total). */
  onOutcome?: (rpc: string, code: string) => void;
}

type Unary<Req, Res> = (call: grpc.ServerUnaryCall<Req, Res>, cb: grpc.sendUnaryData<Res>) => void;

export function adminService(deps: AdminDeps): grpc.UntypedServiceImplementation {
  const { cluster, mover, log } = deps;
  // Anyone who reaches the port can send admin calls with a wrong token: those are logged one line a
  // second at most, naming the caller; the counter has every one. Failures of calls that passed the
  // token check (an operator's cluster add/remove) are always logged: a flood must not hide them.
  const refusedLog = new LogLimiter(1000);

  function handle<Req>(name: string, body: (req: Req) => Promise<ClusterStatus>): Unary<Req, ClusterStatus> {
    return (call, cb) => {
      Promise.resolve()
        .then(() => deps.authorize?.(call.metadata))
        .then(() => body(call.request))
        .then(
          (res) => {
            deps.onOutcome?.(name, 'OK');
            cb(null, res);
          },
          (err: unknown) => {
            const e = toServiceError(err, log);
            const code = statusName(e.code!);
            deps.onOutcome?.(name, code);
            const fields = { rpc: name, code, peer: call.getPeer(), err: (err as Error).message };
            if (e.code !== grpc.status.UNAUTHENTICATED && e.code !== grpc.status.PERMISSION_DENIED) log.warn(fields, 'admin call failed');
            else {
              const suppressed = refusedLog.take();
              if (suppressed !== undefined) log.warn({ ...fields, suppressedSinceLast: suppressed }, 'admin call refused');
            }
            cb(e);
          },
        );
    };
  }

  async function status(message = ''): Promise<ClusterStatus> {
    const state = cluster.state;
    const progress = mover.status();
    const current = new Set(state.members.map((m) => m.name));
    const before = new Set((state.previous ?? state.members).map((m) => m.name));
    const workers = await Promise.all(
      participants(state).map(async (m): Promise<AdminWorkerStatus> => {
        const role = !state.previous ? 'member' : current.has(m.name) && !before.has(m.name) ? 'joining' : !current.has(m.name) ? 'leaving' : 'member';
        try {
          const s = await workerStatus(cluster.link(m.name).client, m.name, deps.statusTimeoutMs);
          return { name: m.name, address: m.address, role, reachable: true, keys: s.keys, epoch: s.epoch, error: '' };
        } catch (err) {
          return { name: m.name, address: m.address, role, reachable: false, keys: 0, epoch: 0, error: (err as Error).message };
        }
      }),
    );
    return {
      epoch: state.epoch,
      phase: state.previous ? 'migrating' : 'stable',
      members: state.members,
      previous: state.previous ?? [],
      keys_moved: progress.moved,
      keys_remaining: state.previous ? progress.remaining : 0,
      workers,
      message: message || progress.lastError,
    };
  }

  return {
    AddMembers: handle<{ members: MemberSpec[] }>('AddMembers', async (req) => {
      if (!req.members?.length) throw invalidArgument('members: name at least one worker to add, as name=host:port');
      const add = parseRequested(req.members, deps.addressTemplate);
      const next = await cluster.change(add, []);
      log.info({ epoch: next.epoch, added: add.map((m) => m.name) }, 'workers added; moving keys');
      return status(`added ${add.map((m) => m.name).join(', ')}: epoch ${next.epoch}, keys are moving`);
    }),
    RemoveMembers: handle<{ members: MemberSpec[] }>('RemoveMembers', async (req) => {
      if (!req.members?.length) throw invalidArgument('members: name at least one worker to remove');
      const names = req.members.map((m) => m.name);
      const next = await cluster.change([], names);
      log.info({ epoch: next.epoch, removed: names }, 'workers removed; draining them');
      return status(`removing ${names.join(', ')}: epoch ${next.epoch}, draining; stop them only when status shows them removed`);
    }),
    Status: handle<object>('Status', () => status()),
  };
}

/** A bad name or address in the request is the caller's mistake: INVALID_ARGUMENT, not INTERNAL. */
function parseRequested(members: MemberSpec[], template: string | undefined): MemberSpec[] {
  try {
    return parseMembers(members.map((m) => (m.address ? `${m.name}=${m.address}` : m.name)).join(','), template);
  } catch (err) {
    throw invalidArgument((err as Error).message);
  }
}
