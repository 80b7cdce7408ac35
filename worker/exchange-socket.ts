// The worker's end of the framed exchange (shared/exchange-codec.ts): one connection from one gateway.
// Batches are applied in arrival order and answered in the same order, one RESULTS frame per OPS.
//
// Backpressure: while the gateway is not reading its answers (the socket's write buffer is over its
// high-water mark), the worker stops reading new batches, so TCP holds the gateway back instead of
// this process buffering answers without bound. A peer that is not speaking the protocol (bad frame,
// oversized frame) is disconnected with one log line.
//
// Closing (a bad frame, or the worker's SIGTERM drain) stops applying batches and ends the connection
// after the answers already written: a process that exited with them still in the write buffer (the
// gateway not reading at that moment) lost the answers to batches it had applied, and the gateway
// failed those requests UNAVAILABLE although they were stored. Frames that arrive meanwhile are read
// and dropped unapplied (the gateway fails them UNAVAILABLE), so the peer's FIN is seen and unread
// data does not turn the close into a reset that would discard the answers too.
//
// A connection silent for PEER_SILENT_MS (the gateway pings every KEEPALIVE_MS) is destroyed: its
// gateway vanished without closing it.
import type { Socket } from 'node:net';
import { FrameError, FrameKind, FrameReader, PEER_SILENT_MS, decodeOps, encodeResults, encodeSignal } from '../shared/exchange-codec.js';
import type { Logger } from '../shared/logger.js';
import type { OpBatch, ResultBatch } from '../shared/proto.js';

const PONG = encodeSignal(FrameKind.PONG);
// After a bad frame, a peer that never reads the answers already written is cut off after this long.
const CLOSE_GRACE_MS = 5_000;

export interface ExchangeConnection {
  /**
   * Stops applying batches and closes the connection once the answers already written are sent (the
   * gateway fails what it still waits for). Resolves when it has closed: false if this side cut it off
   * because the peer had not read its answers within graceMs, else true.
   */
  end(graceMs?: number): Promise<boolean>;
}

export function serveExchangeSocket(
  socket: Socket,
  head: Buffer,
  apply: (batch: OpBatch) => ResultBatch,
  log: Logger,
  onClose: () => void,
  silentMs = PEER_SILENT_MS,
): ExchangeConnection {
  let open = true;
  let blocked = false;
  const peer = `${socket.remoteAddress}:${socket.remotePort}`;
  let cutOff = false;
  const closed = new Promise<boolean>((resolve) => socket.once('close', () => resolve(!cutOff)));
  const close = (graceMs = CLOSE_GRACE_MS): Promise<boolean> => {
    if (open) {
      open = false;
      socket.end();
      socket.resume();
    }
    // From here the grace alone decides when a peer that has not read its answers is cut off (and
    // reported so): the silence limit would end a longer grace early, as if the peer had read them.
    socket.setTimeout(0);
    const timer = setTimeout(() => {
      cutOff = true;
      socket.destroy();
    }, graceMs);
    timer.unref();
    void closed.then(() => clearTimeout(timer));
    return closed;
  };
  socket.setNoDelay(true);
  socket.setTimeout(silentMs, () => {
    log.warn({ peer, silentMs }, 'exchange connection closed: nothing received or sent for silentMs, not even the gateway\'s keepalive ping; its gateway is gone');
    socket.destroy();
  });
  const reader = new FrameReader((kind, buf, start, end) => {
    if (!open) return;
    if (kind === FrameKind.OPS) {
      const r = apply(decodeOps(buf, start, end));
      if (!socket.write(encodeResults(r.epoch, r.results)) && !blocked) {
        blocked = true;
        socket.pause();
        socket.once('drain', () => {
          blocked = false;
          if (open) socket.resume();
        });
      }
    } else if (kind === FrameKind.PING) socket.write(PONG);
    else throw new FrameError(`unexpected frame kind ${kind}`);
  });
  const receive = (chunk: Buffer): void => {
    if (!open) return;
    try {
      reader.push(chunk);
    } catch (err) {
      // The gateway fails what it sent on this connection and has no answer for with UNAVAILABLE,
      // and reconnects; answers to batches applied before this one are still delivered.
      if (err instanceof FrameError) log.warn({ peer, err: err.message }, 'exchange connection closed: malformed frame');
      else log.error({ peer, err }, 'exchange connection closed: applying a batch failed');
      void close();
    }
  };
  socket.on('data', receive);
  socket.on('error', () => {
    // 'close' follows; a gateway that went away is not an error of this worker.
  });
  socket.on('close', () => {
    open = false;
    onClose();
  });
  if (head.length > 0) receive(head);
  if (open && !blocked) socket.resume();
  return { end: close };
}
