// The HTTP side of every process: /metrics for Prometheus, /healthz (process alive) and /readyz
// (serving traffic). Plain node:http keeps it off the gRPC event path and dependency-free.
import { createServer, type Server } from 'node:http';
import type { Registry } from 'prom-client';
import { listenAddress } from './grpc-server.js';
import { METRICS_PORT, listenError } from './listen-error.js';

export interface HttpEndpoints {
  server: Server;
  port: number;
  close(): Promise<void>;
}

export async function startHttpEndpoints(
  registry: Registry,
  host: string,
  port: number,
  isReady: () => boolean,
): Promise<HttpEndpoints> {
  const server = createServer((req, res) => {
    const path = (req.url ?? '/').split('?')[0];
    if (req.method !== 'GET' && req.method !== 'HEAD') {
      res.writeHead(405, { allow: 'GET, HEAD' }).end();
      return;
    }
    if (path === '/metrics') {
      registry.metrics().then(
        (text) => res.writeHead(200, { 'content-type': registry.contentType }).end(text),
        (err: unknown) => res.writeHead(500, { 'content-type': 'text/plain' }).end(`metrics failed: ${String(err)}\n`),
      );
    } else if (path === '/healthz') {
      res.writeHead(200, { 'content-type': 'text/plain' }).end('ok\n');
    } else if (path === '/readyz') {
      const ready = isReady();
      res.writeHead(ready ? 200 : 503, { 'content-type': 'text/plain' }).end(ready ? 'ready\n' : 'not ready\n');
    } else {
      res.writeHead(404, { 'content-type': 'text/plain' }).end('not found: try /metrics, /healthz, /readyz\n');
    }
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', (err) => reject(listenError(listenAddress(host, port), METRICS_PORT, err)));
    server.listen(port, host, () => resolve());
  });
  const address = server.address();
  const bound = typeof address === 'object' && address ? address.port : port;
  return {
    server,
    port: bound,
    close: () => new Promise<void>((resolve) => server.close(() => resolve())),
  };
}
