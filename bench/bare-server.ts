// `--bare`: the floor under every grpc-js figure in the report. A grpc-js server with kvstore's public
// API and server options, and a Map behind it: no validation, no routing, no storage, no metrics.
// Whatever the gateway or the direct worker costs per request beyond this, kvstore's own design and
// code spend; what this costs, any Node grpc-js server pays (issue 8's table starts from this row).
// Run by the bench as a child process: argv = keys, value size; it reports its port over IPC.
import * as grpc from '@grpc/grpc-js';
import { bindServer } from '../shared/grpc-server.js';
import { publicServerOptions } from '../shared/grpc-options.js';
import { publicApi } from '../shared/proto.js';
import { keyName, makeValue } from './workload.js';

const [keys, valueSize] = process.argv.slice(2).map(Number);
if (!Number.isInteger(keys) || !Number.isInteger(valueSize)) {
  process.stderr.write('usage: bare-server <keys> <value-size>\n');
  process.exit(2);
}

const data = new Map<string, string>();
const value = makeValue(valueSize);
for (let i = 0; i < keys; i++) data.set(keyName(i), value);

type Call<Req> = grpc.ServerUnaryCall<Req, unknown>;
const server = new grpc.Server(publicServerOptions);
server.addService(publicApi().KeyValueStore.service, {
  Put: (call: Call<{ key: string; value: string }>, cb: grpc.sendUnaryData<{ old_value: string }>) => {
    const old = data.get(call.request.key);
    data.set(call.request.key, call.request.value);
    cb(null, { old_value: old ?? '' });
  },
  Get: (call: Call<{ key: string }>, cb: grpc.sendUnaryData<{ value: string }>) => {
    const v = data.get(call.request.key);
    if (v === undefined) cb({ code: grpc.status.NOT_FOUND, details: `key ${JSON.stringify(call.request.key)} not found` });
    else cb(null, { value: v });
  },
  Delete: (call: Call<{ key: string }>, cb: grpc.sendUnaryData<object>) => {
    data.delete(call.request.key);
    cb(null, {});
  },
});

const port = await bindServer(server, '127.0.0.1', 0);
process.send?.({ type: 'listening', name: 'bare', port });
// Nothing to drain: the bench stops it between phases, with no calls in flight.
const stop = (): void => {
  server.forceShutdown();
  process.exit(0);
};
process.on('SIGTERM', stop);
process.on('SIGINT', stop);
process.on('disconnect', stop);
