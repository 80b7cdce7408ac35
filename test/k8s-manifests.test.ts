// The manifests in k8s/ render, validate against the Kubernetes (1.34) and Prometheus Operator API
// schemas, and agree with the code: every port, env var, probe, command and path is one the code uses.
// The local run (k8s-local-run.test.ts) then starts what they describe.
import { existsSync, readFileSync } from 'node:fs';
import { join, relative } from 'node:path';
import * as promOperator from '@kubernetes-models/prometheus-operator/monitoring.coreos.com/v1';
import * as apps from 'kubernetes-models/apps/v1';
import * as autoscaling from 'kubernetes-models/autoscaling/v2';
import * as networking from 'kubernetes-models/networking.k8s.io/v1';
import * as policy from 'kubernetes-models/policy/v1';
import * as core from 'kubernetes-models/v1';
import { describe, expect, it } from 'vitest';
import { DEFAULTS, ENV } from '../shared/settings.js';
import {
  IMAGE_APP_DIR,
  K8S,
  REPO,
  container,
  containerEnv,
  containerPort,
  entryEnvNames,
  find,
  kustomizations,
  protoServices,
  render,
  type Container,
  type K8sObject,
} from './helpers/k8s.js';

// Only the API versions a current cluster serves; anything else (a beta, a removed version) fails.
const MODELS: Record<string, Record<string, unknown>> = {
  v1: core,
  'apps/v1': apps,
  'policy/v1': policy,
  'autoscaling/v2': autoscaling,
  'networking.k8s.io/v1': networking,
  'monitoring.coreos.com/v1': promOperator,
};

interface Validatable {
  validate(): void;
}
type ModelCtor = new (data: unknown) => Validatable;

function model(obj: { apiVersion: string; kind: string }): ModelCtor {
  const ctor = MODELS[obj.apiVersion]?.[obj.kind];
  if (typeof ctor !== 'function') throw new Error(`${obj.apiVersion} ${obj.kind} is not a current API known to the schema models`);
  return ctor as ModelCtor;
}

const NAMESPACE = 'kvstore';
const objects = render();
const worker = find(objects, 'StatefulSet', 'kv-worker');
const gateway = find(objects, 'Deployment', 'kv-gateway');
const workerC = container(worker, 'worker');
const gatewayC = container(gateway, 'gateway');
const workerEnv = containerEnv(objects, workerC, 'kv-worker-0');
const gatewayEnv = containerEnv(objects, gatewayC, 'kv-gateway-0');
const dockerfile = readFileSync(join(REPO, 'Dockerfile'), 'utf8');

const label = (dir: string): string => relative(REPO, dir);

describe('kubectl kustomize renders every kustomization in k8s/', () => {
  it.each(kustomizations().map((d) => [label(d), d]))('%s renders, and every object validates against its API schema', (_name, dir) => {
    const rendered = render(dir);
    expect(rendered.length).toBeGreaterThan(0);
    for (const obj of rendered) {
      const Ctor = model(obj);
      expect(() => new Ctor(obj).validate(), `${obj.kind} ${obj.metadata.name}`).not.toThrow();
      if (obj.kind !== 'Namespace') expect(obj.metadata.namespace, `${obj.kind} ${obj.metadata.name}`).toBe(NAMESPACE);
    }
  });

  it('the schema check is not vacuous: a broken object fails it', () => {
    const broken = structuredClone(worker) as K8sObject;
    broken.spec.template.spec.containers[0].ports[0].containerPort = 'grpc';
    expect(() => new (model(broken))(broken).validate()).toThrow(/containerPort/);
    expect(() => model({ apiVersion: 'policy/v1beta1', kind: 'PodDisruptionBudget' })).toThrow(/not a current API/);
  });

  it('the Prometheus Operator overlay adds a ServiceMonitor for every Service that has a metrics port', () => {
    const overlay = render(join(K8S, 'overlays', 'prometheus-operator'));
    const monitors = overlay.filter((o) => o.kind === 'ServiceMonitor');
    for (const svc of overlay.filter((o) => o.kind === 'Service')) {
      const metricsPort = (svc.spec.ports as { name: string }[]).find((p) => p.name === 'metrics');
      expect(metricsPort, `Service ${svc.metadata.name} exposes metrics`).toBeDefined();
      const monitor = monitors.find((m) =>
        Object.entries(m.spec.selector.matchLabels as Record<string, string>).every(([k, v]) => svc.metadata.labels?.[k] === v),
      );
      expect(monitor, `a ServiceMonitor selects Service ${svc.metadata.name}`).toBeDefined();
      expect(monitor!.spec.endpoints).toEqual([expect.objectContaining({ port: 'metrics', path: '/metrics' })]);
    }
  });

  it('the Prometheus Operator overlay carries the PrometheusRule once k8s/monitoring/alerts.yaml exists', () => {
    const overlay = render(join(K8S, 'overlays', 'prometheus-operator'));
    const rules = overlay.filter((o) => o.kind === 'PrometheusRule');
    if (!existsSync(join(K8S, 'monitoring', 'alerts.yaml'))) return;
    expect(
      rules.length,
      'k8s/monitoring/alerts.yaml exists but the overlay renders no PrometheusRule: give k8s/monitoring a kustomization.yaml ' +
        '(resources: alerts.yaml; dashboard.json through a configMapGenerator) and list ../../monitoring under resources in ' +
        'k8s/components/prometheus-operator/kustomization.yaml',
    ).toBeGreaterThan(0);
  });
});

describe('manifests and code agree', () => {
  const roles: [string, Container, Record<string, string>, string, { grpc: number; metrics: number }][] = [
    ['worker', workerC, workerEnv, 'dist/worker/main.js', { grpc: DEFAULTS.workerPort, metrics: DEFAULTS.workerMetricsPort }],
    ['gateway', gatewayC, gatewayEnv, 'dist/gateway/main.js', { grpc: DEFAULTS.gatewayPort, metrics: DEFAULTS.gatewayMetricsPort }],
  ];

  it.each(roles)('%s: the command runs the compiled entry point inside the image', (_role, c, _env, entry) => {
    expect(c.command).toEqual(['node', `${IMAGE_APP_DIR}/${entry}`]);
    expect(c.args ?? []).toEqual([]);
    expect(existsSync(join(REPO, entry)), `${entry} exists after npm run build`).toBe(true);
  });

  it.each(roles)('%s: ports are the documented defaults, and env, probes, annotations and Services use them', (role, c, env, _e, ports) => {
    const workload = role === 'worker' ? worker : gateway;
    // One pod, one IP: its ports must differ from each other.
    const all = (c.ports ?? []).map((p) => p.containerPort);
    expect(new Set(all).size).toBe(all.length);
    expect(containerPort(c, 'grpc')).toBe(ports.grpc);
    expect(containerPort(c, 'metrics')).toBe(ports.metrics);
    expect(env[ENV.port]).toBe(String(ports.grpc));
    expect(env[ENV.metricsPort]).toBe(String(ports.metrics));
    const annotations = workload.spec.template.metadata.annotations as Record<string, string>;
    expect(annotations).toMatchObject({ 'prometheus.io/scrape': 'true', 'prometheus.io/port': String(ports.metrics), 'prometheus.io/path': '/metrics' });
    for (const probe of [c.readinessProbe, c.livenessProbe, c.startupProbe].filter((p) => p !== undefined)) {
      expect(probe.grpc?.port).toBe(ports.grpc);
    }
    const svc = find(objects, 'Service', workload.metadata.name);
    const podLabels = workload.spec.template.metadata.labels as Record<string, string>;
    expect(podLabels).toMatchObject(svc.spec.selector);
    for (const p of svc.spec.ports as { name: string; port: number; targetPort: string }[]) {
      expect(p.targetPort).toBe(p.name);
      expect(p.port).toBe(containerPort(c, p.name));
    }
  });

  it.each(roles)('%s: probes use the native gRPC probe on a health service the server registers', (_role, c) => {
    const services = protoServices();
    expect(c.readinessProbe?.grpc).toBeDefined();
    expect(c.livenessProbe?.grpc).toBeDefined();
    for (const probe of [c.readinessProbe, c.livenessProbe, c.startupProbe].filter((p) => p !== undefined)) {
      const service = probe.grpc?.service ?? '';
      if (service !== '') expect(services).toContain(service);
    }
  });

  it.each(roles)('%s: every env var set is one that entry point reads', (_role, c, env, entry) => {
    const known = entryEnvNames(entry);
    const settings = new Set<string>(Object.values(ENV));
    for (const name of Object.keys(env)) {
      expect(known, `${name} (${entry} --help)`).toContain(name);
      if (name !== 'KV_SHUTDOWN_GRACE_MS') expect(settings, `${name} is in shared/settings.ts ENV`).toContain(name);
    }
    expect(c.env?.every((e) => known.has(e.name))).toBe(true);
  });

  it.each(roles)('%s: every path it writes is a mounted volume (the root filesystem is read-only)', (role, c, env) => {
    const mounts = new Set((c.volumeMounts ?? []).map((m) => m.mountPath));
    const writes = role === 'worker' ? [env[ENV.dataDir], env[ENV.backupDir]] : [env[ENV.backupDir]];
    // SQLite and Node put temporary files under TMPDIR, which defaults to /tmp.
    writes.push(env.TMPDIR ?? '/tmp');
    for (const path of writes) {
      expect(path, 'set explicitly, not left to a default relative to the image').toMatch(/^\//);
      expect(mounts, path).toContain(path);
    }
  });

  it.each(roles)('%s: the grace period covers preStop, the drain and closing down', (role, c, env) => {
    const workload = role === 'worker' ? worker : gateway;
    const graceMs = Number(env.KV_SHUTDOWN_GRACE_MS ?? 10_000);
    const preStopMs = (c.lifecycle?.preStop?.sleep?.seconds ?? 0) * 1000;
    // Room after the drain for closing worker links (1 s) or checkpointing the WAL and stopping the snapshot pool.
    const closeMs = 5_000;
    expect(workload.spec.template.spec.terminationGracePeriodSeconds * 1000).toBeGreaterThanOrEqual(preStopMs + graceMs + closeMs);
  });

  it.each(roles)('%s: runs as the image\'s non-root user with a read-only root, no capabilities and no API token', (role, c) => {
    const pod = (role === 'worker' ? worker : gateway).spec.template.spec;
    const user = /^USER\s+(\d+)(?::(\d+))?\s*$/m.exec(dockerfile);
    expect(user, 'Dockerfile USER is numeric').not.toBeNull();
    expect(Number(user![1])).toBeGreaterThan(0);
    expect(pod.automountServiceAccountToken).toBe(false);
    // Service links would add KV_<SERVICE>_PORT variables alongside the KV_ settings.
    expect(pod.enableServiceLinks).toBe(false);
    expect(pod.securityContext).toMatchObject({ runAsNonRoot: true, runAsUser: Number(user![1]), seccompProfile: { type: 'RuntimeDefault' } });
    expect(c.securityContext).toMatchObject({ readOnlyRootFilesystem: true, allowPrivilegeEscalation: false, capabilities: { drop: ['ALL'] } });
    const pkg = JSON.parse(readFileSync(join(REPO, 'package.json'), 'utf8')) as { version: string };
    expect(c.image).toBe(`kvstore:${pkg.version}`);
  });

  it('workers: a StatefulSet whose pod names are exactly the gateway\'s ring members, reached through the headless Service', () => {
    const headless = find(objects, 'Service', worker.spec.serviceName);
    expect(headless.spec.clusterIP).toBe('None');
    expect(worker.spec.podManagementPolicy).toBe('Parallel');
    const names = Array.from({ length: worker.spec.replicas as number }, (_, i) => `${worker.metadata.name}-${i}`);
    expect(gatewayEnv[ENV.members].split(',')).toEqual(names);
    expect(workerC.env?.find((e) => e.name === ENV.name)?.valueFrom?.fieldRef?.fieldPath).toBe('metadata.name');
    // "{name}.kv-worker:50052": the pod's DNS name under the headless Service, on the worker's gRPC port.
    expect(gatewayEnv[ENV.workerAddressTemplate]).toBe(`{name}.${headless.metadata.name}:${containerPort(workerC, 'grpc')}`);
  });

  it('workers: a claim per pod for data and one for backups, kept when scaled down or deleted', () => {
    const claims = (worker.spec.volumeClaimTemplates as { metadata: { name: string } }[]).map((t) => t.metadata.name);
    expect(claims.sort()).toEqual(['backups', 'data']);
    const mountOf = (vol: string): string | undefined => workerC.volumeMounts?.find((m) => m.name === vol)?.mountPath;
    expect(mountOf('data')).toBe(workerEnv[ENV.dataDir]);
    expect(mountOf('backups')).toBe(workerEnv[ENV.backupDir]);
    expect(worker.spec.persistentVolumeClaimRetentionPolicy).toEqual({ whenDeleted: 'Retain', whenScaled: 'Retain' });
  });

  it.each([
    ['worker', worker],
    ['gateway', gateway],
  ])('%s pods prefer to spread over nodes', (_role, workload) => {
    const terms = workload.spec.template.spec.affinity.podAntiAffinity.preferredDuringSchedulingIgnoredDuringExecution as {
      podAffinityTerm: { topologyKey: string; labelSelector: { matchLabels: Record<string, string> } };
    }[];
    expect(terms.some((t) => t.podAffinityTerm.topologyKey === 'kubernetes.io/hostname')).toBe(true);
    expect(workload.spec.template.metadata.labels).toMatchObject(terms[0].podAffinityTerm.labelSelector.matchLabels);
  });

  it('gateway: 2+ replicas behind a ClusterIP Service, a PodDisruptionBudget and a CPU HorizontalPodAutoscaler', () => {
    // The HPA owns the count; a replicas field would reset it on every apply.
    expect(gateway.spec.replicas).toBeUndefined();
    expect(find(objects, 'Service', 'kv-gateway').spec.type).toBe('ClusterIP');
    const podLabels = gateway.spec.template.metadata.labels as Record<string, string>;
    const pdb = find(objects, 'PodDisruptionBudget', 'kv-gateway');
    expect(podLabels).toMatchObject(pdb.spec.selector.matchLabels);
    const hpa = find(objects, 'HorizontalPodAutoscaler', 'kv-gateway');
    expect(hpa.spec.scaleTargetRef).toEqual({ apiVersion: 'apps/v1', kind: 'Deployment', name: 'kv-gateway' });
    expect(hpa.spec.minReplicas).toBeGreaterThanOrEqual(2);
    expect(hpa.spec.metrics).toEqual([expect.objectContaining({ type: 'Resource', resource: expect.objectContaining({ name: 'cpu' }) })]);
    expect(gatewayC.resources?.requests?.cpu, 'the HPA needs a CPU request').toBeDefined();
  });

  it('NetworkPolicy: workers take gRPC only from gateway pods and metrics only from the monitoring namespace', () => {
    const workerLabels = worker.spec.template.metadata.labels as Record<string, string>;
    const gatewayLabels = gateway.spec.template.metadata.labels as Record<string, string>;
    const policies = objects.filter(
      (o) => o.kind === 'NetworkPolicy' && Object.entries(o.spec.podSelector.matchLabels as Record<string, string>).every(([k, v]) => workerLabels[k] === v),
    );
    expect(policies.map((p) => p.metadata.name)).toEqual(['kv-worker']);
    const [policy] = policies;
    expect(policy.spec.policyTypes).toEqual(['Ingress']);
    type Rule = { from?: Record<string, { matchLabels: Record<string, string> }>[]; ports?: { port: string | number }[] };
    const rules = policy.spec.ingress as Rule[];
    const portNumber = (p: string | number): number => (typeof p === 'number' ? p : containerPort(workerC, p));
    const allowed = rules.flatMap((r) => (r.ports ?? []).map((p) => ({ port: portNumber(p.port), from: r.from })));
    // Every rule names its sources and its ports: none opens a port to everyone or everything to someone.
    expect(rules.every((r) => (r.from?.length ?? 0) > 0 && (r.ports?.length ?? 0) > 0)).toBe(true);
    expect(allowed).toEqual([
      { port: DEFAULTS.workerPort, from: [{ podSelector: { matchLabels: { 'app.kubernetes.io/name': gatewayLabels['app.kubernetes.io/name'] } } }] },
      { port: DEFAULTS.workerMetricsPort, from: [{ namespaceSelector: { matchLabels: { 'kubernetes.io/metadata.name': 'monitoring' } } }] },
    ]);
  });
});

describe('Dockerfile', () => {
  const stages = dockerfile.split(/^FROM\s+/m).slice(1);
  const final = stages[stages.length - 1];

  it('builds on Node 20 slim in every stage, with npm ci and tsc in the build stage', () => {
    const base = /^ARG NODE_IMAGE=(\S+)$/m.exec(dockerfile)?.[1];
    expect(base).toMatch(/^node:20(\.[\d.]+)?-(bookworm-|bullseye-|trixie-)?slim$/);
    expect(stages.length).toBeGreaterThanOrEqual(2);
    for (const s of stages) expect(s.split('\n')[0]).toMatch(/^\$\{NODE_IMAGE\}/);
    expect(stages[0]).toMatch(/RUN npm ci\b/);
    expect(stages[0]).toMatch(/npm run build/);
  });

  it('ships only production dependencies, the compiled code and the protos, run from the folder the manifests name', () => {
    expect(dockerfile).toMatch(/npm prune --omit=dev|npm ci --omit=dev/);
    expect(final).toMatch(new RegExp(`^WORKDIR ${IMAGE_APP_DIR}$`, 'm'));
    for (const dir of ['node_modules', 'dist', 'proto']) expect(final).toMatch(new RegExp(`^COPY --from=\\S+ /app/${dir} \\./${dir}$`, 'm'));
    expect(final).toMatch(/^ENTRYPOINT \["node"\]$/m);
    const ignored = readFileSync(join(REPO, '.dockerignore'), 'utf8').split('\n').map((l) => l.trim());
    expect(ignored).toEqual(expect.arrayContaining(['node_modules', 'dist', '.git']));
  });
});
