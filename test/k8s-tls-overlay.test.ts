// The TLS overlays (k8s/components/tls, k8s/overlays/tls*): they render, validate, and agree with the
// code and the docs — every setting they add is one the entry points read, every file a setting names
// lies in a read-only Secret volume under a key the documented `kubectl create secret` commands create,
// the worker server name is the one in the documented worker certificate, and probes are httpGet on the
// metrics port paths the processes serve. Then the rendered pods run locally (as in
// k8s-local-run.test.ts) with test certificates projected into their Secret volumes, and a client does
// Put/Get over TLS with a client certificate, through mutual TLS to every worker.
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { basename, dirname, join, posix } from 'node:path';
import * as grpc from '@grpc/grpc-js';
import * as apps from 'kubernetes-models/apps/v1';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { adminMetadata } from '../shared/auth.js';
import { adminApi } from '../shared/proto.js';
import { ENV } from '../shared/settings.js';
import { clientCredentials } from '../shared/tls.js';
import { makeTestCerts, type TestCerts } from './helpers/certs.js';
import { kvClient } from './helpers/client.js';
import { K8S, REPO, container, containerEnv, containerPort, entryEnvNames, find, render, renderWithComponents, type Container, type K8sObject } from './helpers/k8s.js';
import { LocalCluster, grpcProbe, runProbe, waitReady, type Pod } from './helpers/pods.js';

/** Secret name -> key -> where its value comes from, parsed from the commands in docs/kubernetes.md. */
type SecretSource = { file: string } | { literal: string };
function documentedSecrets(): Map<string, Map<string, SecretSource>> {
  const doc = readFileSync(join(REPO, 'docs', 'kubernetes.md'), 'utf8').replace(/\\\n\s*/g, ' ');
  const secrets = new Map<string, Map<string, SecretSource>>();
  for (const m of doc.matchAll(/^kubectl -n kvstore create secret (tls|generic) (\S+) (.*)$/gm)) {
    const [, type, name, rest] = m;
    const keys = new Map<string, SecretSource>();
    for (const a of rest.matchAll(/--([\w-]+)=("[^"]*"|\S+)/g)) {
      const [, flag, value] = a;
      if (type === 'tls' && (flag === 'cert' || flag === 'key')) keys.set(flag === 'cert' ? 'tls.crt' : 'tls.key', { file: value });
      else if (flag === 'from-file') keys.set(value.split('=')[0], { file: value.slice(value.indexOf('=') + 1) });
      else if (flag === 'from-literal') keys.set(value.split('=')[0], { literal: value.slice(value.indexOf('=') + 1) });
      else throw new Error(`docs/kubernetes.md: unexpected --${flag} for secret ${name}`);
    }
    secrets.set(name, keys);
  }
  return secrets;
}

/** `leaf NAME CA USAGE [SAN]` lines of docs/security.md's openssl recipe: NAME -> SAN. */
function documentedLeaves(): Map<string, string> {
  const doc = readFileSync(join(REPO, 'docs', 'security.md'), 'utf8');
  return new Map([...doc.matchAll(/^leaf (\S+) \S+ \S+(?: (\S+))?$/gm)].map((m) => [m[1], m[2] ?? '']));
}

const SECRETS = documentedSecrets();
const base = render();
// Each variant with the render it must equal except for the two workloads (the same kustomization without TLS).
const variants: [string, K8sObject[], boolean, K8sObject[]][] = [
  ['k8s/overlays/tls', render(join(K8S, 'overlays', 'tls')), false, base],
  ['k8s/overlays/tls-prometheus-operator', render(join(K8S, 'overlays', 'tls-prometheus-operator')), false, render(join(K8S, 'overlays', 'prometheus-operator'))],
  ['base + components tls, tls-client-ca', renderWithComponents(['tls', 'tls-client-ca']), true, base],
];

const ROLES = [
  {
    role: 'worker',
    kind: 'StatefulSet',
    name: 'kv-worker',
    entry: 'dist/worker/main.js',
    settings: [ENV.internalTlsCa, ENV.internalTlsCert, ENV.internalTlsKey],
    clientCa: [] as string[],
  },
  {
    role: 'gateway',
    kind: 'Deployment',
    name: 'kv-gateway',
    entry: 'dist/gateway/main.js',
    settings: [ENV.tlsCert, ENV.tlsKey, ENV.internalTlsCa, ENV.internalTlsCert, ENV.internalTlsKey, ENV.internalTlsServerName, ENV.adminTokenFile],
    clientCa: [ENV.tlsClientCa] as string[],
  },
] as const;
const FILE_SETTINGS = new Set<string>([ENV.tlsCert, ENV.tlsKey, ENV.tlsClientCa, ENV.internalTlsCa, ENV.internalTlsCert, ENV.internalTlsKey, ENV.adminTokenFile]);

type SecretVolume = { name: string; secret?: { secretName: string; defaultMode?: number; optional?: boolean } };
const secretVolumes = (workload: K8sObject): SecretVolume[] =>
  (workload.spec.template.spec.volumes as SecretVolume[]).filter((v) => v.secret !== undefined);

describe.each(variants)('%s', (_label, objects, withClientCa, reference) => {
  it('adds no Secret (no key material in git) and changes nothing but the two workloads', () => {
    expect(objects.filter((o) => o.kind === 'Secret')).toEqual([]);
    const key = (o: K8sObject): string => `${o.kind}/${o.metadata.name}`;
    const baseByKey = new Map(reference.map((o) => [key(o), o]));
    expect(objects.map(key).sort()).toEqual(reference.map(key).sort());
    for (const o of objects) {
      expect(baseByKey.has(key(o)), key(o)).toBe(true);
      if (o.kind !== 'StatefulSet' && o.kind !== 'Deployment') expect(o, key(o)).toEqual(baseByKey.get(key(o)));
    }
    // The workloads validate against the 1.34 schemas (k8s-manifests.test.ts does every object of the overlays).
    expect(() => new apps.StatefulSet(find(objects, 'StatefulSet', 'kv-worker') as never).validate()).not.toThrow();
    expect(() => new apps.Deployment(find(objects, 'Deployment', 'kv-gateway') as never).validate()).not.toThrow();
  });

  it.each(ROLES)('$role: sets the TLS settings, each one the entry point reads', ({ kind, name, entry, settings, clientCa }) => {
    const c = container(find(objects, kind, name), name === 'kv-worker' ? 'worker' : 'gateway');
    const set = new Set((c.env ?? []).map((e) => e.name));
    const expected = [...settings, ...(withClientCa ? clientCa : [])];
    for (const s of expected) expect(set, s).toContain(s);
    if (!withClientCa) expect(set).not.toContain(ENV.tlsClientCa);
    // Nothing else security-related: never the token itself in the environment.
    expect(set).not.toContain(ENV.adminToken);
    const known = entryEnvNames(entry);
    const settingNames = new Set<string>(Object.values(ENV));
    for (const e of c.env ?? []) {
      expect(known, `${e.name} (${entry} --help)`).toContain(e.name);
      if (e.name !== 'KV_SHUTDOWN_GRACE_MS') expect(settingNames, `${e.name} in shared/settings.ts`).toContain(e.name);
    }
  });

  it.each(ROLES)('$role: every file a setting names is a key of a documented Secret, mounted read-only at that path', ({ kind, name }) => {
    const workload = find(objects, kind, name);
    const c = container(workload, name === 'kv-worker' ? 'worker' : 'gateway');
    const env = containerEnv(objects, c, `${name}-0`);
    const volumes = secretVolumes(workload);
    const used = new Set<string>();
    for (const [setting, path] of Object.entries(env).filter(([k]) => FILE_SETTINGS.has(k))) {
      const mount = (c.volumeMounts ?? []).find((m) => posix.dirname(path) === m.mountPath);
      expect(mount, `${setting}=${path} lies directly in a mounted volume`).toBeDefined();
      expect(mount!.readOnly, mount!.mountPath).toBe(true);
      const volume = volumes.find((v) => v.name === mount!.name);
      expect(volume, `${mount!.name} is a Secret volume`).toBeDefined();
      const { secretName, defaultMode, optional } = volume!.secret!;
      expect(optional ?? false, `${secretName} is required: a missing file would stop the process`).toBe(false);
      expect(defaultMode, `${secretName} readable by the fsGroup only`).toBe(0o440);
      expect([...SECRETS.keys()], `docs/kubernetes.md creates Secret ${secretName}`).toContain(secretName);
      expect([...SECRETS.get(secretName)!.keys()], `${setting}: a key of ${secretName}`).toContain(posix.basename(path));
      used.add(volume!.name);
    }
    // Every Secret volume is there for a setting, and files of one Secret never shadow another's.
    expect([...used].sort()).toEqual(volumes.map((v) => v.name).sort());
    const mountPaths = (c.volumeMounts ?? []).map((m) => m.mountPath);
    expect(new Set(mountPaths).size).toBe(mountPaths.length);
  });

  it('the gateway checks workers for the name the documented worker certificate carries', () => {
    const c = container(find(objects, 'Deployment', 'kv-gateway'), 'gateway');
    const serverName = containerEnv(objects, c, 'kv-gateway-0')[ENV.internalTlsServerName];
    const workerCertFile = SECRETS.get('kv-internal-worker-tls')?.get('tls.crt');
    expect(workerCertFile && 'file' in workerCertFile).toBe(true);
    const leaf = basename((workerCertFile as { file: string }).file, '.crt');
    const san = documentedLeaves().get(leaf);
    expect(san, `docs/security.md issues ${leaf}`).toBeDefined();
    expect(san!.split(','), `${leaf}'s subjectAltName`).toContain(`DNS:${serverName}`);
    // The test certificates used below carry the same name.
    expect(serverName).toBe('kv-worker');
  });

  it.each(ROLES)('$role: probes are httpGet on the metrics port, /readyz and /healthz, with the base\'s timings', ({ kind, name }) => {
    const cname = name === 'kv-worker' ? 'worker' : 'gateway';
    const c = container(find(objects, kind, name), cname);
    const b = container(find(base, kind, name), cname);
    const server = readFileSync(join(REPO, 'shared', 'http-server.ts'), 'utf8');
    const metricsPort = Number(containerEnv(objects, c, `${name}-0`)[ENV.metricsPort]);
    const probes = { startupProbe: '/readyz', readinessProbe: '/readyz', livenessProbe: '/healthz' } as const;
    for (const [field, path] of Object.entries(probes) as [keyof typeof probes, string][]) {
      const probe = c[field];
      expect(probe === undefined, field).toBe(b[field] === undefined);
      if (!probe) continue;
      expect(probe.grpc, `${field}: the kubelet's gRPC probe cannot do TLS`).toBeUndefined();
      expect(probe.httpGet, field).toEqual({ path, port: 'metrics' });
      expect(containerPort(c, 'metrics')).toBe(metricsPort);
      expect(server, `shared/http-server.ts serves ${path}`).toContain(`path === '${path}'`);
      const { grpc: _g, httpGet: _h, ...timings } = probe;
      const { grpc: _bg, httpGet: _bh, ...baseTimings } = b[field]!;
      expect(timings, field).toEqual(baseTimings);
    }
  });
});

describe('the rendered TLS pods run locally: Put/Get over TLS with a client certificate, mutual TLS to the workers', () => {
  const objects = variants[2][1];
  const workers = find(objects, 'StatefulSet', 'kv-worker');
  const gateways = find(objects, 'Deployment', 'kv-gateway');
  const gatewayEnv = containerEnv(objects, container(gateways, 'gateway'), 'kv-gateway-0');
  const template = gatewayEnv[ENV.workerAddressTemplate];
  const dnsName = (n: string): string => template.replaceAll('{name}', n).replace(/:\d+$/, '');
  const NET = `127.${20 + Math.floor(Math.random() * 200)}.${Math.floor(Math.random() * 250)}`;
  let nextHost = 2;
  const TOKEN = 'e1f2d3c4b5a69788796a5b4c3d2e1f00';

  let certs: TestCerts;
  let root: string;
  let cluster: LocalCluster;
  const workerPods: Pod[] = [];
  let gateway: Pod;
  let address: string;

  beforeAll(async () => {
    certs = makeTestCerts();
    root = mkdtempSync(join(tmpdir(), 'kv-k8s-tls-'));
    // The documented commands' files, as the test certificates name them.
    const files: Record<string, string> = {
      'public-ca.crt': certs.publicCa,
      'internal-ca.crt': certs.internalCa,
      'gateway.crt': certs.gateway.cert,
      'gateway.key': certs.gateway.key,
      'kv-worker.crt': certs.worker.cert,
      'kv-worker.key': certs.worker.key,
      'kv-gateway-internal.crt': certs.gatewayInternal.cert,
      'kv-gateway-internal.key': certs.gatewayInternal.key,
    };
    writeFileSync(join(root, 'token'), `${TOKEN}\n`);
    const secrets: Record<string, Record<string, string>> = {};
    for (const [name, keys] of SECRETS) {
      secrets[name] = {};
      for (const [key, source] of keys) {
        const file = 'file' in source ? files[basename(source.file)] : join(root, 'token');
        if (!file) throw new Error(`no test file for ${name}/${key} (${JSON.stringify(source)})`);
        secrets[name][key] = file;
      }
    }
    cluster = new LocalCluster(objects, root, [dnsName('x').split('.').slice(1).join('.')], secrets);
    for (const name of gatewayEnv[ENV.members].split(',').slice(0, workers.spec.replicas as number)) {
      const pod = cluster.start(workers, name, `${NET}.${nextHost++}`);
      cluster.setDns(dnsName(name), pod.ip);
      workerPods.push(pod);
    }
    await Promise.all(workerPods.map((p) => waitReady(p, 30_000)));
    gateway = cluster.start(gateways, 'kv-gateway-0', `${NET}.${nextHost++}`);
    await waitReady(gateway, 30_000);
    address = `${gateway.ip}:${containerPort(gateway.container, 'grpc')}`;
  }, 90_000);

  afterAll(async () => {
    await cluster?.stopAll();
    if (root) rmSync(root, { recursive: true, force: true });
    certs?.remove();
  });

  it('every probe passes, and the plaintext gRPC probe the base used would fail', async () => {
    for (const pod of [...workerPods, gateway]) {
      const c: Container = pod.container;
      for (const probe of [c.startupProbe, c.readinessProbe, c.livenessProbe]) {
        if (probe) expect(await runProbe(pod, probe), `${pod.name} ${JSON.stringify(probe.httpGet)}`).toBe(true);
      }
      expect(await grpcProbe(pod.ip, { grpc: { port: containerPort(c, 'grpc') } }), `${pod.name} speaks plaintext gRPC`).toBe(false);
    }
  });

  it('Put and Get work over TLS with a client certificate; without one the gateway refuses', async () => {
    const creds = clientCredentials({ ca: certs.publicCa, cert: certs.client.cert, key: certs.client.key, serverName: 'localhost' });
    const kv = kvClient(address, 10_000, creds);
    try {
      // Enough keys that every worker owns some: each Put and Get crosses mutual TLS to its owner.
      const keys = Array.from({ length: 24 }, (_, i) => `tls-k8s/${i}`);
      for (const k of keys) expect(await kv.put(k, `v:${k}`)).toBe('');
      for (const k of keys) expect(await kv.get(k)).toBe(`v:${k}`);
    } finally {
      kv.close();
    }
    const anonymous = kvClient(address, 3000, clientCredentials({ ca: certs.publicCa, serverName: 'localhost' }));
    try {
      await expect(anonymous.get('tls-k8s/0')).rejects.toMatchObject({ code: grpc.status.UNAVAILABLE });
    } finally {
      anonymous.close();
    }
  });

  it('admin calls need the token from the mounted Secret file', async () => {
    const creds = clientCredentials({ ca: certs.publicCa, cert: certs.client.cert, key: certs.client.key, serverName: 'localhost' });
    const client = new (adminApi().Admin)(address, creds) as unknown as grpc.Client &
      Record<string, (r: object, md: grpc.Metadata, o: grpc.CallOptions, cb: (e: grpc.ServiceError | null, r?: { phase: string }) => void) => void>;
    const status = (token: string | undefined): Promise<{ phase: string }> =>
      new Promise((resolve, reject) =>
        client.Status({}, adminMetadata(token), { deadline: Date.now() + 10_000 }, (e, r) => (e ? reject(e) : resolve(r!))),
      );
    try {
      expect((await status(TOKEN)).phase).toBe('stable');
      await expect(status(undefined)).rejects.toMatchObject({ code: grpc.status.UNAUTHENTICATED });
    } finally {
      client.close();
    }
    // The file the kubelet projected is the one the setting names.
    expect(readFileSync(join(gateway.volumes['admin-token'], 'token'), 'utf8').trim()).toBe(TOKEN);
    expect(dirname(gatewayEnv[ENV.adminTokenFile])).toBe(gateway.container.volumeMounts?.find((m) => m.name === 'admin-token')?.mountPath);
  });

  it('every pod drains and exits 0 on SIGTERM', async () => {
    const codes = await Promise.all([gateway, ...workerPods].map((p) => cluster.stop(p, 20)));
    expect(codes).toEqual(codes.map(() => 0));
  });
});
