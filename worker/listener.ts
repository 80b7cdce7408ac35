// The worker's one port: gRPC (control calls, the health service, --direct-api) and the gateway's
// framed exchange (shared/exchange-codec.ts) share it, so deployments, probes and NetworkPolicies keep
// one port. Each connection is told apart by its first bytes, the exchange's MAGIC against anything
// else (HTTP/2 starts with "PRI "), also over TLS (where the gateway asks for the exchange's ALPN name
// and gRPC clients for "h2"); gRPC connections are handed to grpc-js through its connection injector.
// TLS, when on, is terminated here with the same mutual-TLS settings for both.
import { createServer as createNetServer, type Server, type Socket } from 'node:net';
import { createServer as createTlsServer, type TLSSocket, type TlsOptions } from 'node:tls';
import * as grpc from '@grpc/grpc-js';
import { EXCHANGE_ALPN, MAGIC } from '../shared/exchange-codec.js';
import { listenAddress } from '../shared/grpc-server.js';
import { GRPC_PORT, listenError } from '../shared/listen-error.js';
import type { Logger } from '../shared/logger.js';

// A connection that has not said which protocol it speaks within this time is dropped.
const SNIFF_TIMEOUT_MS = 10_000;

export interface WorkerListener {
  port: number;
  /** Stops accepting connections; open ones are ended by their owners (gRPC drain, exchange drain). */
  stopAccepting(): void;
}

export interface ListenOptions {
  host: string;
  port: number;
  grpcServer: grpc.Server;
  /** Mutual TLS for both protocols; plain TCP when undefined. */
  tls?: TlsOptions;
  /** A gateway's exchange connection, paused, with the bytes read after MAGIC; the callee resumes it. */
  onExchange(socket: Socket, head: Buffer): void;
  log: Logger;
}

export async function listenWorker(o: ListenOptions): Promise<WorkerListener> {
  // TLS is already terminated here, so grpc-js sees a plain HTTP/2 connection.
  const injector = o.grpcServer.createConnectionInjector(grpc.ServerCredentials.createInsecure());
  const sniff = (socket: Socket): void => {
    let head: Buffer = Buffer.alloc(0);
    const timer = setTimeout(() => socket.destroy(), SNIFF_TIMEOUT_MS);
    const onData = (chunk: Buffer): void => {
      head = head.length === 0 ? chunk : Buffer.concat([head, chunk]);
      if (head.length < MAGIC.length && MAGIC.subarray(0, head.length).equals(head)) return;
      clearTimeout(timer);
      socket.removeListener('data', onData);
      socket.pause();
      if (head.subarray(0, MAGIC.length).equals(MAGIC)) {
        // Paused here; the exchange resumes reading unless the first bytes already filled its output.
        o.onExchange(socket, head.subarray(MAGIC.length));
      } else {
        // HTTP/2 reads what was already taken off the socket (Node http2 core replays readableLength).
        socket.unshift(head);
        injector.injectConnection(socket);
      }
    };
    socket.on('data', onData);
    socket.once('error', () => clearTimeout(timer));
    socket.once('close', () => clearTimeout(timer));
  };
  let server: Server;
  if (o.tls) {
    server = createTlsServer({ ...o.tls, ALPNProtocols: ['h2', EXCHANGE_ALPN] }, (socket: TLSSocket) => sniff(socket));
    server.on('tlsClientError', (err: Error, socket: TLSSocket) => {
      // Debug only: anyone who can reach the port could fill the log with failed handshakes.
      o.log.debug({ peer: `${socket.remoteAddress}:${socket.remotePort}`, err: err.message }, 'TLS handshake refused');
    });
  } else {
    server = createNetServer((socket) => sniff(socket));
  }
  const address = listenAddress(o.host, o.port);
  await new Promise<void>((resolve, reject) => {
    server.once('error', (err) => reject(listenError(address, GRPC_PORT, err)));
    server.listen(o.port, o.host, () => resolve());
  });
  // Later errors (e.g. EMFILE while accepting) are logged; the server keeps serving what it can.
  server.on('error', (err) => o.log.error({ err }, `listener error on ${address}`));
  const bound = server.address();
  return {
    port: typeof bound === 'object' && bound ? bound.port : o.port,
    stopAccepting: () => {
      server.close();
    },
  };
}
