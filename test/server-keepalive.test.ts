// A client that vanishes without closing its connection (its host gone, its pod deleted behind a NAT)
// must not hold a session on the gateway or a worker for good: the gRPC servers ping their clients
// every --keepalive-ms and close a connection whose peer does not answer. The vanished client is a
// TCP relay between a real gRPC client and the server that stops passing bytes either way while
// keeping both sockets open, which is what the server sees of a host that went away.
import { createServer, connect, type Server, type Socket } from 'node:net';
import * as grpc from '@grpc/grpc-js';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { kvClient, type KvClient } from './helpers/client.js';
import { TestCluster, waitFor } from './helpers/processes.js';

/** A relay to 127.0.0.1:`port` that can go silent, and tells when the server closed its side. */
class Relay {
  private server!: Server;
  private readonly sockets: Socket[] = [];
  silent = false;
  /** Connections the server has closed, and bytes it sent while the relay was passing them. */
  closedByServer = 0;
  bytesFromServer = 0;
  port = 0;

  static async start(port: number): Promise<Relay> {
    const relay = new Relay();
    relay.server = createServer((client) => {
      const upstream = connect(port, '127.0.0.1');
      relay.sockets.push(client, upstream);
      // Silent: bytes are read and dropped, never passed on and never answered.
      client.on('data', (d) => relay.silent || upstream.write(d));
      upstream.on('data', (d) => {
        if (relay.silent) return;
        relay.bytesFromServer += d.length;
        client.write(d);
      });
      upstream.on('close', () => {
        relay.closedByServer++;
        client.destroy();
      });
      client.on('close', () => upstream.destroy());
      client.on('error', () => undefined);
      upstream.on('error', () => undefined);
    });
    await new Promise<void>((resolve) => relay.server.listen(0, '127.0.0.1', resolve));
    relay.port = (relay.server.address() as { port: number }).port;
    return relay;
  }

  close(): void {
    for (const s of this.sockets) s.destroy();
    this.server.close();
  }
}

const pause = (ms: number) => new Promise((r) => setTimeout(r, ms));
const KEEPALIVE = ['--keepalive-ms', '1000'];

describe('server keepalive', () => {
  let cluster: TestCluster;
  let relay: Relay | undefined;
  let client: KvClient | undefined;

  beforeAll(async () => {
    cluster = await TestCluster.start({ workers: 1, gatewayArgs: KEEPALIVE, workerArgs: KEEPALIVE });
  }, 60_000);

  afterEach(() => {
    client?.close();
    client = undefined;
    relay?.close();
    relay = undefined;
  });

  afterAll(async () => {
    await cluster?.stop();
  });

  it('the gateway closes the connection of a client that went silent', async () => {
    relay = await Relay.start(Number(cluster.address.split(':')[1]));
    client = kvClient(`127.0.0.1:${relay.port}`, 5000);
    expect(await client.put('k', 'v')).toBe('');
    relay.silent = true;
    await waitFor('the gateway to close the silent connection', async () => relay!.closedByServer > 0, 10_000, 50);
  });

  it('keeps a quiet but answering client connected, pinging it', async () => {
    relay = await Relay.start(Number(cluster.address.split(':')[1]));
    client = kvClient(`127.0.0.1:${relay.port}`, 5000);
    await client.put('k', 'v1');
    const before = relay.bytesFromServer;
    // Several keepalive periods with no call: the pings are answered, so the connection stays.
    await pause(3500);
    expect(relay.bytesFromServer, 'bytes the gateway sent an idle client (its pings)').toBeGreaterThan(before);
    expect(relay.closedByServer).toBe(0);
    expect(await client.put('k', 'v2')).toBe('v1');
    expect(relay.closedByServer).toBe(0);
  });

  it('a worker closes the connection of a gRPC client that went silent', async () => {
    relay = await Relay.start(cluster.worker('worker-0').listening!.port);
    const raw = new grpc.Client(`127.0.0.1:${relay.port}`, grpc.credentials.createInsecure());
    try {
      await new Promise<void>((resolve, reject) => raw.waitForReady(Date.now() + 5000, (err) => (err ? reject(err) : resolve())));
      relay.silent = true;
      await waitFor('the worker to close the silent connection', async () => relay!.closedByServer > 0, 10_000, 50);
    } finally {
      raw.close();
    }
  });
});

describe('server keepalive off (--keepalive-ms 0)', () => {
  it('leaves a silent client connected: what the pings are for', async () => {
    const cluster = await TestCluster.start({ workers: 1, gatewayArgs: ['--keepalive-ms', '0'] });
    const relay = await Relay.start(Number(cluster.address.split(':')[1]));
    const client = kvClient(`127.0.0.1:${relay.port}`, 5000);
    try {
      await client.put('k', 'v');
      relay.silent = true;
      // Twice the time in which the pinging gateway above closes the connection (1 s + 1 s).
      await pause(4000);
      expect(relay.closedByServer).toBe(0);
    } finally {
      client.close();
      relay.close();
      await cluster.stop();
    }
  }, 60_000);
});
