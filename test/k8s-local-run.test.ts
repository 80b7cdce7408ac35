// A local run driven by the rendered manifests: the worker StatefulSet's and gateway Deployment's
// containers start as local processes with their commands and env as rendered, each "pod" on its own
// loopback address with the manifests' ports, the workers' DNS names mapped to those addresses
// (test/helpers/cluster-dns.mjs). Then one worker pod moves to a new address under the same name and
// its keys are still served — the ring holds names, not addresses.
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import * as grpc from '@grpc/grpc-js';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { publicClientOptions } from '../shared/grpc-options.js';
import { publicApi } from '../shared/proto.js';
import { ENV } from '../shared/settings.js';
import { containerEnv, containerPort, find, render, type K8sObject } from './helpers/k8s.js';
import { LocalCluster, grpcProbe, waitReady, type Pod } from './helpers/pods.js';

const objects = render();
const workers = find(objects, 'StatefulSet', 'kv-worker');
const gateways = find(objects, 'Deployment', 'kv-gateway');
const workerGrace = workers.spec.template.spec.terminationGracePeriodSeconds as number;
const gatewayEnv = containerEnv(objects, gateways.spec.template.spec.containers[0], 'kv-gateway');
const template = gatewayEnv[ENV.workerAddressTemplate];
const workerNames = gatewayEnv[ENV.members].split(',');
/** "kv-worker-1" -> "kv-worker-1.kv-worker", the DNS name the gateway dials. */
const dnsName = (name: string): string => template.replaceAll('{name}', name).replace(/:\d+$/, '');

// A random /16 inside 127/8, so two runs of this suite on one machine never share an address.
const NET = `127.${20 + Math.floor(Math.random() * 200)}.${Math.floor(Math.random() * 250)}`;
let nextHost = 2;
const newIp = (): string => `${NET}.${nextHost++}`;

type Client = grpc.Client & Record<string, (req: object, opts: grpc.CallOptions, cb: (err: grpc.ServiceError | null, res: never) => void) => void>;
function call<T>(client: Client, method: string, req: object, timeoutMs = 5000): Promise<T> {
  return new Promise((resolve, reject) =>
    client[method](req, { deadline: Date.now() + timeoutMs }, (err, res: T) => (err ? reject(err) : resolve(res))),
  );
}

describe('the rendered manifests run as local pods', () => {
  let root: string;
  let cluster: LocalCluster;
  const workerPods = new Map<string, Pod>();
  const gatewayPods: Pod[] = [];
  const clients: Client[] = [];
  const keys = Array.from({ length: 60 }, (_, i) => `k8s/key-${i}`);
  const valueOf = (k: string): string => `value of ${k}`;

  beforeAll(async () => {
    root = mkdtempSync(join(tmpdir(), 'kv-k8s-local-'));
    // The headless Service's domain: a worker name under it with no record fails like NXDOMAIN.
    cluster = new LocalCluster(objects, root, [dnsName('x').split('.').slice(1).join('.')]);
    for (const name of workerNames.slice(0, workers.spec.replicas as number)) {
      const pod = cluster.start(workers, name, newIp());
      cluster.setDns(dnsName(name), pod.ip);
      workerPods.set(name, pod);
    }
    await Promise.all([...workerPods.values()].map((p) => waitReady(p, 20_000)));
    const replicas = find(objects, 'HorizontalPodAutoscaler', 'kv-gateway').spec.minReplicas as number;
    for (let i = 0; i < replicas; i++) gatewayPods.push(cluster.start(gateways, `kv-gateway-${i}`, newIp()));
    await Promise.all(gatewayPods.map((p) => waitReady(p, 20_000)));
    const Ctor = publicApi().KeyValueStore;
    for (const g of gatewayPods) {
      clients.push(new Ctor(`${g.ip}:${containerPort(g.container, 'grpc')}`, grpc.credentials.createInsecure(), publicClientOptions) as Client);
    }
  });

  afterAll(async () => {
    for (const c of clients) c.close();
    await cluster?.stopAll();
    if (root) rmSync(root, { recursive: true, force: true });
  });

  it('every pod passes its gRPC probes and serves the metrics its prometheus.io annotations point at', async () => {
    for (const pod of [...workerPods.values(), ...gatewayPods]) {
      for (const probe of [pod.container.startupProbe, pod.container.readinessProbe, pod.container.livenessProbe]) {
        if (probe) expect(await grpcProbe(pod.ip, probe), `${pod.name} ${JSON.stringify(probe.grpc)}`).toBe(true);
      }
      const workload: K8sObject = workerPods.has(pod.name) ? workers : gateways;
      const a = workload.spec.template.metadata.annotations as Record<string, string>;
      const res = await fetch(`http://${pod.ip}:${a['prometheus.io/port']}${a['prometheus.io/path']}`, { signal: AbortSignal.timeout(5000) });
      expect(res.status).toBe(200);
      expect(await res.text()).toMatch(/^process_cpu_seconds_total[ {]/m);
    }
  });

  it('Put, Get, ListKeys and Backup work through every gateway replica', async () => {
    const [a, b] = clients;
    for (const k of keys) expect(await call<{ old_value: string }>(a, 'Put', { key: k, value: valueOf(k) })).toEqual({ old_value: '' });
    for (const k of keys) expect(await call<{ value: string }>(b, 'Get', { key: k })).toEqual({ value: valueOf(k) });
    expect((await call<{ keys: string[] }>(b, 'ListKeys', {})).keys).toEqual([...keys].sort());

    const backup = await call<{ success: boolean; message: string }>(a, 'Backup', {}, 60_000);
    expect(backup.success, backup.message).toBe(true);
    const id = /backup (\S+) complete/.exec(backup.message)?.[1];
    expect(id).toBeDefined();
    // The manifest lands in the gateway's backups volume, each snapshot in its worker's backups claim.
    const manifestDirs = gatewayPods.map((g) => join(g.volumes.backups, id!, 'manifest.json')).filter((f) => existsSync(f));
    expect(manifestDirs).toHaveLength(1);
    const manifest = JSON.parse(readFileSync(manifestDirs[0], 'utf8')) as { workers: { worker: string; keys: number }[]; total_keys: number };
    expect(manifest.workers.map((w) => w.worker)).toEqual(workerNames);
    expect(manifest.total_keys).toBe(keys.length);
    for (const [name, pod] of workerPods) expect(existsSync(join(pod.volumes.backups, id!, `${name}.sqlite`)), name).toBe(true);
  });

  it('a worker pod that comes back on a new address under the same name still serves its keys', async () => {
    const [a, b] = clients;
    const moved = workerNames[1];
    const old = workerPods.get(moved)!;

    // Deleting the pod: SIGTERM, drained within the grace period, and its DNS record goes with it.
    expect(await cluster.stop(old, workerGrace)).toBe(0);
    cluster.setDns(dnsName(moved), undefined);

    // Only the keys it owns fail, naming it; nothing is re-routed to another worker. The client waits
    // longer than the gateway's own deadline, so any failure is the gateway's answer, not ours.
    const owned: string[] = [];
    const patience = Number(gatewayEnv[ENV.requestTimeoutMs]) + 2000;
    for (const k of keys) {
      try {
        expect(await call<{ value: string }>(a, 'Get', { key: k }, patience)).toEqual({ value: valueOf(k) });
      } catch (err) {
        const e = err as grpc.ServiceError;
        expect([grpc.status.UNAVAILABLE, grpc.status.DEADLINE_EXCEEDED], e.message).toContain(e.code);
        expect(e.details).toContain(moved);
        owned.push(k);
      }
    }
    expect(owned.length).toBeGreaterThan(0);
    expect(owned.length).toBeLessThan(keys.length);

    // The StatefulSet recreates it: same name and claims, new IP, new DNS record.
    const pod = cluster.start(workers, moved, newIp());
    expect(pod.ip).not.toBe(old.ip);
    expect(pod.volumes.data).toBe(old.volumes.data);
    cluster.setDns(dnsName(moved), pod.ip);
    workerPods.set(moved, pod);
    await waitReady(pod, 20_000);

    // Both gateways find it again by name, well within grpc-js's default 30 s re-resolution delay.
    const until = Date.now() + 15_000;
    for (const client of [a, b]) {
      for (const k of owned) {
        for (;;) {
          try {
            expect(await call<{ value: string }>(client, 'Get', { key: k }, 2000)).toEqual({ value: valueOf(k) });
            break;
          } catch (err) {
            if (Date.now() > until) throw err;
            await new Promise((r) => setTimeout(r, 100));
          }
        }
      }
    }
    expect((await call<{ keys: string[] }>(b, 'ListKeys', {})).keys).toEqual([...keys].sort());
    expect(await call<{ old_value: string }>(b, 'Put', { key: owned[0], value: 'after the move' })).toEqual({ old_value: valueOf(owned[0]) });
    expect(await call<{ value: string }>(a, 'Get', { key: owned[0] })).toEqual({ value: 'after the move' });
  });

  it('every pod drains and exits 0 on SIGTERM within its grace period', async () => {
    for (const c of clients) c.close();
    clients.length = 0;
    const gatewayGrace = gateways.spec.template.spec.terminationGracePeriodSeconds as number;
    const codes = await Promise.all([
      ...gatewayPods.map((p) => cluster.stop(p, gatewayGrace)),
      ...[...workerPods.values()].map((p) => cluster.stop(p, workerGrace)),
    ]);
    expect(codes.every((c) => c === 0)).toBe(true);
  });
});
