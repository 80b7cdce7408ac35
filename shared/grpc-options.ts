// Message-size limits and connection settings, chosen deliberately rather than left to defaults.
// A public request is at most ~2.2 KB (128-byte key + 2048-byte value + framing); 64 KiB leaves room
// for metadata while refusing a flood of oversized messages with RESOURCE_EXHAUSTED before decoding.
import type { ChannelOptions } from '@grpc/grpc-js';

export const PUBLIC_MAX_RECEIVE_BYTES = 64 * 1024;
// ListKeys answers can be large (1M keys of up to 128 bytes); the answer to a client is bounded by
// the store's size, not by the client, so sending is unlimited and clients raise their receive limit.
export const PUBLIC_MAX_SEND_BYTES = -1;
// A batch on the internal stream is capped at ~1 MiB by the gateway; 16 MiB bounds a single message.
export const INTERNAL_MAX_MESSAGE_BYTES = 16 * 1024 * 1024;
export const CLIENT_MAX_RECEIVE_BYTES = 512 * 1024 * 1024;

// Channelz (grpc-js's introspection of calls and sockets) is not served by kvstore, yet with it on every
// call is tracked: counters, timestamps, trace entries. Off on both servers, which serve one small
// call per client request.
const NO_CHANNELZ = { 'grpc.enable_channelz': 0 };

export const publicServerOptions: ChannelOptions = {
  ...NO_CHANNELZ,
  'grpc.max_receive_message_length': PUBLIC_MAX_RECEIVE_BYTES,
  'grpc.max_send_message_length': PUBLIC_MAX_SEND_BYTES,
  'grpc.keepalive_permit_without_calls': 1,
  'grpc.http2.min_ping_interval_without_data_ms': 5000,
};

export const workerServerOptions: ChannelOptions = {
  ...NO_CHANNELZ,
  'grpc.max_receive_message_length': INTERNAL_MAX_MESSAGE_BYTES,
  'grpc.max_send_message_length': -1,
  'grpc.keepalive_permit_without_calls': 1,
  'grpc.http2.min_ping_interval_without_data_ms': 5000,
};

// Gateway -> worker channels: reconnect quickly after a worker restarts (grpc-js backs off up to
// 120 s by default) and notice a hung worker through keepalive pings.
export const workerChannelOptions: ChannelOptions = {
  'grpc.max_receive_message_length': -1,
  'grpc.max_send_message_length': INTERNAL_MAX_MESSAGE_BYTES,
  'grpc.initial_reconnect_backoff_ms': 100,
  'grpc.min_reconnect_backoff_ms': 100,
  'grpc.max_reconnect_backoff_ms': 1000,
  // In Kubernetes a worker is a DNS name (kv-worker-1.kv-worker) whose pod comes back with a new IP.
  // grpc-js re-resolves a name at most every 30 s by default, so a gateway that resolved the name
  // shortly before the restart kept dialling the dead IP for up to 30 s (test/k8s-local-run.test.ts).
  'grpc.dns_min_time_between_resolutions_ms': 1000,
  'grpc.keepalive_time_ms': 10_000,
  'grpc.keepalive_timeout_ms': 5_000,
  'grpc.keepalive_permit_without_calls': 1,
};

const SERVER_KEEPALIVE_TIMEOUT_MS = 20_000;

/** A server's pings to its clients (`--keepalive-ms`, shared/settings.ts); 0 leaves grpc-js's default: none. */
export function serverKeepalive(ms: number): ChannelOptions {
  return ms === 0 ? {} : { 'grpc.keepalive_time_ms': ms, 'grpc.keepalive_timeout_ms': Math.min(ms, SERVER_KEEPALIVE_TIMEOUT_MS) };
}

export const publicClientOptions: ChannelOptions = {
  'grpc.max_receive_message_length': CLIENT_MAX_RECEIVE_BYTES,
};
