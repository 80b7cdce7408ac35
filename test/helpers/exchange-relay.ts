// A TCP relay in front of a worker's one port that tells the gateway's exchange connection (it starts
// with the exchange's magic bytes) from gRPC, and can refuse gRPC while the exchange still gets
// through: what a gateway sees of a worker whose exchange came back before its gRPC channel did.
import { createServer, connect, type Server, type Socket } from 'node:net';
import { MAGIC } from '../../shared/exchange-codec.js';

export class ExchangeOnlyRelay {
  private server!: Server;
  private readonly grpcSockets = new Set<Socket>();
  private readonly all = new Set<Socket>();
  private grpcRefused = false;
  port = 0;

  /** @param refuseAfterMs how long a refused gRPC connection is held open before it is closed */
  private constructor(private readonly refuseAfterMs: number) {}

  static async start(port: number, refuseAfterMs = 0): Promise<ExchangeOnlyRelay> {
    const relay = new ExchangeOnlyRelay(refuseAfterMs);
    relay.server = createServer((client) => {
      relay.all.add(client);
      client.on('error', () => undefined);
      client.once('data', (first: Buffer) => {
        const exchange = first.subarray(0, MAGIC.length).equals(MAGIC);
        if (!exchange && relay.grpcRefused) return void setTimeout(() => client.destroy(), relay.refuseAfterMs);
        const upstream = connect(port, '127.0.0.1');
        relay.all.add(upstream);
        upstream.on('error', () => undefined);
        if (!exchange) relay.grpcSockets.add(client);
        upstream.write(first);
        client.pipe(upstream);
        upstream.pipe(client);
        client.on('close', () => upstream.destroy());
        upstream.on('close', () => client.destroy());
      });
    });
    await new Promise<void>((resolve) => relay.server.listen(0, '127.0.0.1', resolve));
    relay.port = (relay.server.address() as { port: number }).port;
    return relay;
  }

  /** From now on only the exchange gets through; gRPC connections open now are closed. */
  refuseGrpc(): void {
    this.grpcRefused = true;
    for (const s of this.grpcSockets) s.destroy();
  }

  allowGrpc(): void {
    this.grpcRefused = false;
  }

  close(): void {
    for (const s of this.all) s.destroy();
    this.server.close();
  }
}
