/* global process, URL, setTimeout */
// A load generator in its own process, so a flood does not share the test's event loop (or its gRPC
// connection) with the client that measures latency. Plain ESM so it runs without a build step.
// Usage: node flood.mjs <address> <concurrency> <ms> <valueBytes> <timeoutMs> <key>...
// Prints one JSON line: { calls, codes: { OK: n, RESOURCE_EXHAUSTED: n, ... }, details: { code: first message }, maxMs, firstAnswerMs }.
import { fileURLToPath } from 'node:url';
import * as grpc from '@grpc/grpc-js';
import * as protoLoader from '@grpc/proto-loader';

const [address, concurrency, ms, valueBytes, timeoutMs, ...keys] = process.argv.slice(2);
const proto = fileURLToPath(new URL('../../proto/kvstore.proto', import.meta.url));
const def = protoLoader.loadSync(proto, { keepCase: true, defaults: true });
const { KeyValueStore } = grpc.loadPackageDefinition(def).kvstore;
const client = new KeyValueStore(address, grpc.credentials.createInsecure());
const value = 'x'.repeat(Number(valueBytes));
// The clock starts once connected: on a busy machine, process start-up alone can take a second.
await new Promise((resolve, reject) => client.waitForReady(Date.now() + 20_000, (err) => (err ? reject(err) : resolve())));
const until = Date.now() + Number(ms);
const result = { calls: 0, codes: {}, details: {}, maxMs: 0, firstAnswerMs: -1 };
const t0 = Date.now();
const put = (key) =>
  new Promise((resolve) => client.Put({ key, value }, { deadline: Date.now() + Number(timeoutMs) }, (err) => {
    if (!err) return resolve('OK');
    const code = grpc.status[err.code];
    result.details[code] ??= err.details;
    resolve(code);
  }));

await Promise.all(
  Array.from({ length: Number(concurrency) }, async (_, i) => {
    let n = i;
    while (Date.now() < until) {
      result.calls++;
      const started = Date.now();
      const code = await put(keys[n++ % keys.length]);
      result.maxMs = Math.max(result.maxMs, Date.now() - started);
      if (result.firstAnswerMs < 0) result.firstAnswerMs = Date.now() - t0;
      result.codes[code] = (result.codes[code] ?? 0) + 1;
      // Refusals come back at once: pause so the flood measures the server, not a client spinning.
      if (code !== 'OK') await new Promise((r) => setTimeout(r, 20));
    }
  }),
);
client.close();
process.stdout.write(`${JSON.stringify(result)}\n`);
