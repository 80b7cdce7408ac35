// The error of a port that cannot be listened on, in words an operator can act on: which port it
// was for, the setting that chose it, and for the usual causes what to do.

/** What a port is for and the setting that chose it, e.g. { what: 'gRPC port', setting: '--port / KV_PORT' }. */
export interface PortRole {
  what: string;
  setting: string;
}

export const GRPC_PORT: PortRole = { what: 'gRPC port', setting: '--port / KV_PORT' };
export const METRICS_PORT: PortRole = { what: 'metrics port', setting: '--metrics-port / KV_METRICS_PORT' };

export function listenError(address: string, role: PortRole, err: Error): Error {
  // grpc-js wraps the cause: "No address added out of total 1 resolved errors: [listen EADDRINUSE: ...]".
  const detail = /errors: \[(.+)\]$/s.exec(err.message)?.[1] ?? err.message;
  const hint = /EADDRINUSE/.test(detail)
    ? ': another process is using it (another kvstore?); stop it or choose another port'
    : /EACCES/.test(detail)
      ? ': not allowed (ports below 1024 need privileges); choose a port of 1024 or above'
      : /EADDRNOTAVAIL/.test(detail)
        ? ': this machine has no such address; check --host / KV_HOST'
        : '';
  return new Error(`cannot listen on ${address} (${role.what}, ${role.setting}): ${detail}${hint}`);
}
