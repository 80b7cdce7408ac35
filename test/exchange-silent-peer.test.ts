// A gateway whose host vanishes without a FIN leaves its exchange connection open on the worker:
// nothing is being sent on it, so TCP never notices. The gateway pings every KEEPALIVE_MS whether busy
// or idle, so the worker's end (worker/exchange-socket.ts) closes a connection silent for longer.
// Real TCP connections on loopback to the worker's connection handler, with the silence shortened.
import { connect, createServer, type AddressInfo, type Server, type Socket } from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { FrameKind, FrameReader, KEEPALIVE_MS, PEER_SILENT_MS, encodeSignal } from '../shared/exchange-codec.js';
import { createLogger } from '../shared/logger.js';
import { serveExchangeSocket, type ExchangeConnection } from '../worker/exchange-socket.js';

const SILENT_MS = 400;
let server: Server;
let port: number;
let closedByWorker = 0;

const connections: ExchangeConnection[] = [];

beforeAll(async () => {
  const log = createLogger('worker', 'silent');
  server = createServer((socket) => {
    connections.push(serveExchangeSocket(socket, Buffer.alloc(0), (batch) => ({ epoch: batch.epoch, results: [] }), log, () => closedByWorker++, SILENT_MS));
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  port = (server.address() as AddressInfo).port;
});

afterAll(async () => {
  await new Promise((r) => server.close(r));
});

/** A raw peer; with allowHalfOpen it does not answer the worker's FIN with its own. */
function open(allowHalfOpen = false): Promise<{ s: Socket; closedAt: Promise<number> }> {
  return new Promise((resolve, reject) => {
    const s = connect({ port, host: '127.0.0.1', allowHalfOpen }, () => resolve({ s, closedAt }));
    const closedAt = new Promise<number>((r) => s.once('close', () => r(Date.now())));
    s.once('error', reject);
    s.on('error', () => {});
  });
}

describe('exchange connection whose gateway has gone silent', () => {
  it('leaves the production silence at several keepalive intervals', () => {
    expect(PEER_SILENT_MS).toBeGreaterThanOrEqual(3 * KEEPALIVE_MS);
  });

  it('is closed by the worker once nothing has arrived for the silence limit', async () => {
    const { s, closedAt } = await open();
    const opened = Date.now();
    const closed = await Promise.race([closedAt, new Promise<undefined>((r) => setTimeout(r, 10 * SILENT_MS))]);
    s.destroy();
    expect(closed, 'the worker kept a silent connection open').toBeDefined();
    expect(closed! - opened).toBeGreaterThanOrEqual(SILENT_MS - 50);
  });

  it('stays open while the gateway keeps pinging, and is closed after it stops', async () => {
    const { s, closedAt } = await open();
    let pongs = 0;
    const reader = new FrameReader((kind) => {
      if (kind === FrameKind.PONG) pongs++;
    });
    s.on('data', (chunk: Buffer) => reader.push(chunk));
    let closed = false;
    void closedAt.then(() => (closed = true));
    const ping = encodeSignal(FrameKind.PING);
    // Pings a quarter of the silence apart, for five times the silence.
    for (let i = 0; i < 20 && !closed; i++) {
      s.write(ping);
      await new Promise((r) => setTimeout(r, SILENT_MS / 4));
    }
    expect(closed, 'closed although the gateway was pinging').toBe(false);
    expect(pongs).toBeGreaterThanOrEqual(15);
    const stopped = Date.now();
    const at = await Promise.race([closedAt, new Promise<undefined>((r) => setTimeout(r, 10 * SILENT_MS))]);
    s.destroy();
    expect(at, 'not closed after the pings stopped').toBeDefined();
    expect(at! - stopped).toBeLessThan(5 * SILENT_MS);
  });

  it('leaves a connection being closed (SIGTERM drain) to its grace, and reports a peer that never closed as cut off', async () => {
    // The drain reports connections whose peer did not finish the close within the grace; a silence
    // limit shorter than the grace used to end such a connection first, reported as closed cleanly.
    const { s } = await open(true);
    s.resume(); // reads, but never closes its side
    for (let i = 0; i < 50 && connections.length < 3; i++) await new Promise((r) => setTimeout(r, 10));
    const started = Date.now();
    const flushed = await connections[2].end(3 * SILENT_MS);
    const took = Date.now() - started;
    s.destroy();
    expect(flushed, 'reported as closed cleanly').toBe(false);
    expect(took).toBeGreaterThanOrEqual(3 * SILENT_MS - 50);
  });

  it('told its owner each connection it closed', async () => {
    for (let i = 0; i < 50 && closedByWorker < 3; i++) await new Promise((r) => setTimeout(r, 20));
    expect(closedByWorker).toBe(3);
  });
});
