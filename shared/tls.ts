// TLS settings and the gRPC credentials built from them: TLS (optionally with client certificates)
// for clients of the gateway, and mutual TLS between gateway and workers. Everything is off by default
// so `npm start` stays a one-liner; docs/security.md has the certificate walkthrough.
//
// Files are read once at startup and checked (readable, PEM, key matches certificate) so a bad Secret
// stops the process with a message naming the setting, instead of every handshake failing later with
// an opaque error. Error messages and log lines name files, never their contents.
import { createPrivateKey, X509Certificate } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { checkServerIdentity, type ConnectionOptions, type PeerCertificate, type TlsOptions } from 'node:tls';
import * as grpc from '@grpc/grpc-js';
import { Option } from 'commander';
import { ENV } from './settings.js';

/** Gateway, public side: its server certificate, and the CA whose client certificates it accepts. */
export interface PublicTlsSettings {
  tlsCert?: string;
  tlsKey?: string;
  tlsClientCa?: string;
}

/** Gateway and worker, internal side: one internal CA, and this process's own certificate. */
export interface InternalTlsSettings {
  internalTlsCa?: string;
  internalTlsCert?: string;
  internalTlsKey?: string;
  /** Gateway only: the name worker certificates must carry when workers are dialled by IP or another name. */
  internalTlsServerName?: string;
}

export function publicTlsOptions(): Option[] {
  return [
    new Option('--tls-cert <file>', 'PEM certificate chain the gateway presents to clients (enables TLS; needs --tls-key)').env(ENV.tlsCert),
    new Option('--tls-key <file>', 'PEM private key of --tls-cert').env(ENV.tlsKey),
    new Option('--tls-client-ca <file>', 'PEM CA bundle: when set, clients must present a certificate signed by it').env(ENV.tlsClientCa),
  ];
}

export function internalTlsOptions(role: 'gateway' | 'worker' | 'embedded'): Option[] {
  const own = {
    gateway: 'client certificate the gateway presents to workers',
    worker: 'server certificate the worker presents to gateways',
    // npm start hands the one certificate to the gateway and to every worker (docs/security.md).
    embedded: 'certificate the gateway and the workers all present: one certificate with both serverAuth and clientAuth usages',
  }[role];
  const opts = [
    new Option('--internal-tls-ca <file>', 'PEM CA bundle of the internal gateway<->worker mutual TLS (enables it; needs the cert and key too)').env(ENV.internalTlsCa),
    new Option('--internal-tls-cert <file>', `PEM ${own}`).env(ENV.internalTlsCert),
    new Option('--internal-tls-key <file>', 'PEM private key of --internal-tls-cert').env(ENV.internalTlsKey),
  ];
  if (role !== 'worker') {
    opts.push(
      new Option('--internal-tls-server-name <name>', 'name worker certificates are checked against (default: the host part of each worker address)').env(
        ENV.internalTlsServerName,
      ),
    );
  }
  return opts;
}

interface KeyPair {
  cert: Buffer;
  key: Buffer;
  /** Not secret; logged at startup so an operator sees when rotation is due. */
  validTo: string;
  subject: string;
}

function readFile(setting: string, file: string): Buffer {
  try {
    return readFileSync(file);
  } catch (err) {
    throw new Error(`${setting}: cannot read ${file}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`, { cause: err });
  }
}

function readCa(setting: string, file: string): Buffer {
  const pem = readFile(setting, file);
  try {
    new X509Certificate(pem);
  } catch {
    throw new Error(`${setting}: ${file} is not a PEM certificate`);
  }
  return pem;
}

function readKeyPair(certSetting: string, certFile: string, keySetting: string, keyFile: string): KeyPair {
  const cert = readFile(certSetting, certFile);
  const key = readFile(keySetting, keyFile);
  let x509: X509Certificate;
  try {
    x509 = new X509Certificate(cert);
  } catch {
    throw new Error(`${certSetting}: ${certFile} is not a PEM certificate`);
  }
  let matches: boolean;
  try {
    matches = x509.checkPrivateKey(createPrivateKey(key));
  } catch {
    // Deliberately not the parser's message: it can quote part of the key.
    throw new Error(`${keySetting}: ${keyFile} is not an unencrypted PEM private key`);
  }
  if (!matches) throw new Error(`${keySetting}: ${keyFile} is not the private key of ${certFile}`);
  return { cert, key, validTo: x509.validTo, subject: x509.subject.replaceAll('\n', ', ') };
}

function requireAll(what: string, given: Record<string, string | undefined>): boolean {
  const set = Object.entries(given).filter(([, v]) => v);
  if (set.length === 0) return false;
  const missing = Object.keys(given).filter((k) => !given[k]);
  if (missing.length > 0) throw new Error(`${what} needs ${missing.join(', ')} as well (got only ${set.map(([k]) => k).join(', ')})`);
  return true;
}

/** What is on, for the startup log line: modes and expiry dates, never file contents. */
export interface TlsSummary {
  mode: 'off' | 'tls' | 'mtls';
  subject?: string;
  validTo?: string;
}

export interface ServerTls {
  credentials: grpc.ServerCredentials;
  summary: TlsSummary;
}

/** The worker terminates TLS itself (worker/listener.ts): Node TLS server options, undefined when off. */
export interface WorkerTls {
  socket: TlsOptions | undefined;
  summary: TlsSummary;
}

export function publicServerTls(s: PublicTlsSettings): ServerTls {
  const on = requireAll('gateway TLS', { [ENV.tlsCert]: s.tlsCert, [ENV.tlsKey]: s.tlsKey });
  if (!on) {
    if (s.tlsClientCa) throw new Error(`${ENV.tlsClientCa} needs ${ENV.tlsCert} and ${ENV.tlsKey}: client certificates only exist over TLS`);
    return { credentials: grpc.ServerCredentials.createInsecure(), summary: { mode: 'off' } };
  }
  const pair = readKeyPair(ENV.tlsCert, s.tlsCert!, ENV.tlsKey, s.tlsKey!);
  const clientCa = s.tlsClientCa ? readCa(ENV.tlsClientCa, s.tlsClientCa) : null;
  return {
    credentials: grpc.ServerCredentials.createSsl(clientCa, [{ cert_chain: pair.cert, private_key: pair.key }], clientCa !== null),
    summary: { mode: clientCa ? 'mtls' : 'tls', subject: pair.subject, validTo: pair.validTo },
  };
}

function internalPair(s: InternalTlsSettings): { ca: Buffer; pair: KeyPair } | undefined {
  const on = requireAll('internal mutual TLS', { [ENV.internalTlsCa]: s.internalTlsCa, [ENV.internalTlsCert]: s.internalTlsCert, [ENV.internalTlsKey]: s.internalTlsKey });
  if (!on) return undefined;
  return {
    ca: readCa(ENV.internalTlsCa, s.internalTlsCa!),
    pair: readKeyPair(ENV.internalTlsCert, s.internalTlsCert!, ENV.internalTlsKey, s.internalTlsKey!),
  };
}

/**
 * The worker's side of the internal mutual TLS: a gateway must present a certificate signed by the
 * internal CA. OpenSSL also checks the client certificate's extended key usage, so a worker's own
 * certificate (serverAuth only) cannot be used to call another worker: only gateway certificates
 * (clientAuth) get in.
 */
export function workerServerTls(s: InternalTlsSettings): WorkerTls {
  const internal = internalPair(s);
  if (!internal) return { socket: undefined, summary: { mode: 'off' } };
  const { ca, pair } = internal;
  return {
    socket: { ca, cert: pair.cert, key: pair.key, requestCert: true, rejectUnauthorized: true },
    summary: { mode: 'mtls', subject: pair.subject, validTo: pair.validTo },
  };
}

export interface ChannelTls {
  /** Undefined when internal TLS is off: the link falls back to an insecure channel. */
  credentials: grpc.ChannelCredentials | undefined;
  /** Channel options the credentials need (the server-name override). */
  channelOptions: grpc.ChannelOptions;
  /** The same checks for the exchange socket (gateway/worker-link.ts). */
  socket?: ConnectionOptions;
  summary: TlsSummary & { serverName?: string };
}

/**
 * The gateway's side: present the gateway certificate, verify the worker's against the internal CA.
 * Workers are dialled by IP (embedded) or per-pod DNS names; with a server name set, every worker
 * certificate is checked against that one name. The check lives in the credentials, so any channel
 * built from them verifies correctly; the channel option only makes the name the SNI too (without it
 * an IP address goes out as SNI, which Node warns about, grpc-node#1919).
 */
export function workerChannelTls(s: InternalTlsSettings): ChannelTls {
  const internal = internalPair(s);
  if (!internal) {
    if (s.internalTlsServerName) throw new Error(`${ENV.internalTlsServerName} needs internal TLS (${ENV.internalTlsCa}, ${ENV.internalTlsCert}, ${ENV.internalTlsKey})`);
    return { credentials: undefined, channelOptions: {}, summary: { mode: 'off' } };
  }
  const { ca, pair } = internal;
  const name = s.internalTlsServerName;
  const verify = name ? { checkServerIdentity: (_host: string, cert: PeerCertificate) => checkServerIdentity(name, cert) } : {};
  return {
    credentials: grpc.credentials.createSsl(ca, pair.key, pair.cert, verify),
    channelOptions: name ? { 'grpc.ssl_target_name_override': name } : {},
    socket: { ca, cert: pair.cert, key: pair.key, ...verify, ...(name ? { servername: name } : {}) },
    summary: { mode: 'mtls', subject: pair.subject, validTo: pair.validTo, ...(name ? { serverName: name } : {}) },
  };
}

/** A client of the gateway (kvctl, tests): trust `ca` (or the system roots), present `cert` if given. */
export interface ClientTlsSettings {
  ca?: string;
  cert?: string;
  key?: string;
  /** Check the gateway's certificate against this name instead of the host in the address. */
  serverName?: string;
}

export function clientCredentials(s: ClientTlsSettings): grpc.ChannelCredentials {
  if (Boolean(s.cert) !== Boolean(s.key)) throw new Error('--cert and --key go together');
  const ca = s.ca ? readCa('--ca', s.ca) : null;
  const pair = s.cert && s.key ? readKeyPair('--cert', s.cert, '--key', s.key) : undefined;
  const name = s.serverName;
  const verify = name ? { checkServerIdentity: (_host: string, cert: PeerCertificate) => checkServerIdentity(name, cert) } : {};
  return grpc.credentials.createSsl(ca, pair?.key ?? null, pair?.cert ?? null, verify);
}
