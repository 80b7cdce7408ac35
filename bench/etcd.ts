// `--etcd`: one single-member etcd (the `etcd` binary of Debian's etcd-server, 3.4) on free 127.0.0.1
// ports with a data folder under the bench's temporary folder, run with etcd's own defaults — among
// them durability: etcd fsyncs its write-ahead log before it answers a write (one fsync per raft
// batch, which may hold several concurrent Puts).
import { execFileSync, spawn } from 'node:child_process';
import { mkdirSync } from 'node:fs';
import { createServer, type Server } from 'node:net';
import { join } from 'node:path';
import * as grpc from '@grpc/grpc-js';
import { benchClient } from './clients.js';
import { sleep } from './load.js';
import { supervise, type ServerSet } from './servers.js';

const ETCD_INSTALL_HINT = '--etcd needs the etcd binary (etcd 3.4) on PATH: apt-get install etcd-server';
const READY_TIMEOUT_MS = 30_000;

/** "3.4.23", or an Error saying how to install etcd. */
export function etcdVersion(): string {
  let out: string;
  try {
    out = execFileSync('etcd', ['--version'], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
  } catch (err) {
    const e = err as NodeJS.ErrnoException;
    throw new Error(e.code === 'ENOENT' ? ETCD_INSTALL_HINT : `${ETCD_INSTALL_HINT} (etcd --version failed: ${e.message})`, { cause: err });
  }
  return /etcd Version:\s*(\S+)/.exec(out)?.[1] ?? out.split('\n')[0].trim();
}

/** Ports the kernel says are free now (held open together, so the two differ). */
async function freePorts(n: number): Promise<number[]> {
  const servers: Server[] = [];
  try {
    const ports: number[] = [];
    for (let i = 0; i < n; i++) {
      const s = createServer();
      servers.push(s);
      await new Promise<void>((resolve, reject) => s.once('error', reject).listen(0, '127.0.0.1', () => resolve()));
      ports.push((s.address() as { port: number }).port);
    }
    return ports;
  } finally {
    await Promise.all(servers.map((s) => new Promise((r) => s.close(r))));
  }
}

export async function startEtcd(dataDir: string): Promise<ServerSet> {
  const dir = join(dataDir, 'etcd');
  mkdirSync(dir, { recursive: true });
  const [clientPort, peerPort] = await freePorts(2);
  const client = `http://127.0.0.1:${clientPort}`;
  const peer = `http://127.0.0.1:${peerPort}`;
  const child = spawn(
    'etcd',
    [
      '--name', 'bench',
      '--data-dir', dir,
      '--listen-client-urls', client,
      '--advertise-client-urls', client,
      '--listen-peer-urls', peer,
      '--initial-advertise-peer-urls', peer,
      '--initial-cluster', `bench=${peer}`,
      '--initial-cluster-state', 'new',
      '--logger', 'zap',
      '--log-outputs', 'stderr',
      '--log-level', 'warn',
    ],
    { stdio: ['ignore', 'ignore', 'pipe'] },
  );
  const { output, gone, stop } = supervise(child);
  const address = `127.0.0.1:${clientPort}`;
  try {
    await waitUntilServing(address, gone);
  } catch (err) {
    await stop();
    throw new Error(`etcd did not start: ${(err as Error).message}\n${output()}`, { cause: err });
  }
  return { address, protocol: 'etcd', processes: [{ name: 'etcd', pid: child.pid!, port: clientPort, stop }], stop };
}

/** Until a Range answers: etcd accepts connections a little before its KV service is up. */
async function waitUntilServing(address: string, gone: () => boolean): Promise<void> {
  const c = benchClient('etcd', address);
  try {
    const until = Date.now() + READY_TIMEOUT_MS;
    for (;;) {
      if (gone()) throw new Error('etcd exited');
      const err = await new Promise<grpc.ServiceError | null>((resolve) => c.get('bench-ready', { deadline: Date.now() + 1000 }, resolve));
      if (!err || err.code === grpc.status.NOT_FOUND /* answered */) return;
      if (Date.now() > until) throw new Error(`no answer from ${address} in ${READY_TIMEOUT_MS / 1000} s: ${err.message}`);
      await sleep(100);
    }
  } finally {
    c.close();
  }
}
