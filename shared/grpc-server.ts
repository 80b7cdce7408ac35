// Binding, health and shutdown for a grpc-js server, shared by gateway and worker.
import * as grpc from '@grpc/grpc-js';
import { HealthImplementation } from 'grpc-health-check';
import { GRPC_PORT, listenError } from './listen-error.js';

/** "host:port", with an IPv6 host in brackets. */
export function listenAddress(host: string, port: number): string {
  return host.includes(':') ? `[${host}]:${port}` : `${host}:${port}`;
}

export async function bindServer(server: grpc.Server, host: string, port: number, creds = grpc.ServerCredentials.createInsecure()): Promise<number> {
  const address = listenAddress(host, port);
  return new Promise<number>((resolve, reject) => {
    server.bindAsync(address, creds, (err, bound) => (err ? reject(listenError(address, GRPC_PORT, err)) : resolve(bound)));
  });
}

export function addHealth(server: grpc.Server, services: string[]): HealthImplementation {
  const statuses: Record<string, 'SERVING' | 'NOT_SERVING'> = { '': 'SERVING' };
  for (const s of services) statuses[s] = 'SERVING';
  const health = new HealthImplementation(statuses);
  health.addToServer(server);
  return health;
}

export function setAllHealth(health: HealthImplementation, services: string[], state: 'SERVING' | 'NOT_SERVING'): void {
  health.setStatus('', state);
  for (const s of services) health.setStatus(s, state);
}

/**
 * Let in-flight calls finish, but never wait forever: tryShutdown waits on every open call, and a
 * long-lived stream from a gateway (or a dead client) never ends by itself.
 */
export async function drainServer(server: grpc.Server, graceMs: number): Promise<'drained' | 'forced'> {
  return new Promise((resolve) => {
    const timer = setTimeout(() => {
      server.forceShutdown();
      resolve('forced');
    }, graceMs);
    server.tryShutdown(() => {
      clearTimeout(timer);
      resolve('drained');
    });
  });
}
