// Admin (membership) calls to a gateway, for tests.
import * as grpc from '@grpc/grpc-js';
import { adminApi, type ClusterStatus } from '../../shared/proto.js';
import { waitFor } from './processes.js';

export function admin(address: string) {
  const c = new (adminApi().Admin)(address, grpc.credentials.createInsecure());
  const call = (method: string, req: object): Promise<ClusterStatus> =>
    new Promise((resolve, reject) =>
      (c as unknown as Record<string, (r: object, o: object, cb: (e: Error | null, r: ClusterStatus) => void) => void>)[method](
        req,
        { deadline: Date.now() + 30_000 },
        (e, r) => (e ? reject(e) : resolve(r)),
      ),
    );
  return {
    status: () => call('Status', {}),
    add: (members: { name: string; address: string }[]) => call('AddMembers', { members }),
    remove: (names: string[]) => call('RemoveMembers', { members: names.map((name) => ({ name, address: '' })) }),
    close: () => c.close(),
  };
}

export async function waitStable(address: string, timeoutMs = 90_000): Promise<ClusterStatus> {
  const a = admin(address);
  try {
    return await waitFor('the migration to complete', async () => {
      const s = await a.status();
      return s.phase === 'stable' ? s : undefined;
    }, timeoutMs, 200);
  } finally {
    a.close();
  }
}

