// ListKeysPage: one page of keys in byte order after `after`, with no state kept between pages (any
// gateway replica can serve the next one). Outside a migration each worker's first limit+1 keys
// after `after` contain the merged first limit+1, so one bounded scan per worker suffices. During a
// migration (rare, bounded in time) a key may sit on its old or its new owner and deletes leave
// tombstones, so the page is cut from the full, correct listing instead.
import * as grpc from '@grpc/grpc-js';
import { KvError } from '../shared/errors.js';
import { pageLimit } from '../shared/paging.js';
import type { Cluster } from './cluster.js';
import { describeFailures, fanout, mergeSorted } from './fanout.js';
import { scan } from './worker-rpc.js';

export interface KeyPage {
  keys: string[];
  next_after: string;
  done: boolean;
}

const MAX_EPOCH_RETRIES = 3;

function cut(keys: string[], limit: number): KeyPage {
  const done = keys.length <= limit;
  if (!done) keys.length = limit;
  return { keys, next_after: keys.length > 0 ? keys[keys.length - 1] : '', done };
}

export async function listKeysPage(cluster: Cluster, after: string, requested: number, timeoutMs: number): Promise<KeyPage> {
  const limit = pageLimit(requested);
  for (let attempt = 0; ; attempt++) {
    if (cluster.state.previous) {
      const all = await cluster.listKeys(timeoutMs);
      let i = 0;
      while (i < all.length && all[i] <= after) i++;
      return cut(all.slice(i, i + limit + 1), limit);
    }
    const epoch = cluster.epoch;
    const { ok, failed } = await fanout(cluster.all(), async (link) => {
      const keys: string[] = [];
      await scan(link.client, link.name, { epoch, after, limit: limit + 1 }, timeoutMs, (chunk) => {
        for (const k of chunk.keys) keys.push(k);
      });
      return keys;
    });
    if (failed.length === 0) return cut(mergeSorted([...ok.values()]), limit);
    // A worker on another epoch refused the scan: learn the new membership and start the page over.
    if (failed.some((f) => f.code === grpc.status.FAILED_PRECONDITION) && attempt < MAX_EPOCH_RETRIES) {
      await cluster.refresh();
      continue;
    }
    const code = failed.every((f) => f.code === grpc.status.DEADLINE_EXCEEDED) ? grpc.status.DEADLINE_EXCEEDED : grpc.status.UNAVAILABLE;
    throw new KvError(code, `ListKeysPage needs every worker; ${failed.length} could not answer: ${describeFailures(failed)}`);
  }
}
