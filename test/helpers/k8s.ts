// Rendering the kustomize trees in k8s/ and reading the objects the tests need from the output.
import { execFileSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, relative } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseAllDocuments } from 'yaml';

export const REPO = fileURLToPath(new URL('../..', import.meta.url));
export const K8S = join(REPO, 'k8s');
/** Where the Dockerfile puts the app; container commands name files under it. */
export const IMAGE_APP_DIR = '/app';

export interface K8sObject {
  apiVersion: string;
  kind: string;
  metadata: { name: string; namespace?: string; labels?: Record<string, string>; annotations?: Record<string, string> };
  // The tests read many kinds; a loose shape keeps them short and each read is checked by an assertion.
  // eslint-disable-next-line @typescript-eslint/no-explicit-any
  spec?: any;
  data?: Record<string, string>;
}

export interface EnvVar {
  name: string;
  value?: string;
  valueFrom?: { fieldRef?: { fieldPath: string }; configMapKeyRef?: { name: string; key: string } };
}
export interface Probe {
  grpc?: { port: number; service?: string };
  httpGet?: { path?: string; port: number | string; scheme?: string };
  tcpSocket?: unknown;
  exec?: unknown;
  periodSeconds?: number;
  failureThreshold?: number;
}
export interface Container {
  name: string;
  image: string;
  command?: string[];
  args?: string[];
  env?: EnvVar[];
  envFrom?: { configMapRef?: { name: string } }[];
  ports?: { name?: string; containerPort: number }[];
  readinessProbe?: Probe;
  livenessProbe?: Probe;
  startupProbe?: Probe;
  lifecycle?: { preStop?: { sleep?: { seconds: number }; exec?: unknown; httpGet?: unknown } };
  securityContext?: {
    runAsNonRoot?: boolean;
    runAsUser?: number;
    readOnlyRootFilesystem?: boolean;
    allowPrivilegeEscalation?: boolean;
    capabilities?: { drop?: string[]; add?: string[] };
  };
  volumeMounts?: { name: string; mountPath: string; readOnly?: boolean }[];
  resources?: { requests?: Record<string, string>; limits?: Record<string, string> };
}

/** Every folder that `kubectl kustomize` must render: the top, the base, each overlay. */
export function kustomizations(): string[] {
  const overlays = join(K8S, 'overlays');
  const dirs = [K8S, join(K8S, 'base')];
  if (existsSync(overlays)) {
    for (const d of readdirSync(overlays).sort()) {
      if (existsSync(join(overlays, d, 'kustomization.yaml'))) dirs.push(join(overlays, d));
    }
  }
  return dirs;
}

const cache = new Map<string, K8sObject[]>();

export function render(dir = K8S): K8sObject[] {
  let objects = cache.get(dir);
  if (!objects) {
    let out: string;
    try {
      out = execFileSync('kubectl', ['kustomize', dir], { encoding: 'utf8', timeout: 30_000, stdio: ['ignore', 'pipe', 'pipe'] });
    } catch (err) {
      const e = err as NodeJS.ErrnoException & { stderr?: string };
      if (e.code === 'ENOENT') throw new Error('kubectl not found: these tests render k8s/ with `kubectl kustomize` (kubectl 1.27+)', { cause: err });
      throw new Error(`kubectl kustomize ${dir} failed: ${e.stderr || e.message}`, { cause: err });
    }
    objects = parseAllDocuments(out).map((doc) => {
      if (doc.errors.length > 0) throw new Error(`kubectl kustomize ${dir}: ${doc.errors[0].message}`);
      return doc.toJS() as K8sObject;
    });
    cache.set(dir, objects);
  }
  return objects;
}

/**
 * Renders the base with `components` (folders under k8s/components) from a throwaway kustomization, the
 * way an operator's own overlay would list them. kustomize refuses absolute paths, hence the relative ones.
 */
export function renderWithComponents(components: string[]): K8sObject[] {
  const dir = mkdtempSync(join(tmpdir(), 'kv-kustomize-'));
  try {
    const rel = (p: string): string => relative(dir, join(K8S, p));
    const lines = [
      'apiVersion: kustomize.config.k8s.io/v1beta1',
      'kind: Kustomization',
      'namespace: kvstore',
      `resources: [${JSON.stringify(rel('base'))}]`,
      `components: [${components.map((c) => JSON.stringify(rel(join('components', c)))).join(', ')}]`,
    ];
    writeFileSync(join(dir, 'kustomization.yaml'), `${lines.join('\n')}\n`);
    return [...render(dir)];
  } finally {
    cache.delete(dir);
    rmSync(dir, { recursive: true, force: true });
  }
}

export function find(objects: K8sObject[], kind: string, name: string): K8sObject {
  const found = objects.find((o) => o.kind === kind && o.metadata.name === name);
  if (!found) throw new Error(`rendered manifests have no ${kind} ${name}`);
  return found;
}

export function container(workload: K8sObject, name: string): Container {
  const c = (workload.spec.template.spec.containers as Container[]).find((x) => x.name === name);
  if (!c) throw new Error(`${workload.kind} ${workload.metadata.name} has no container ${name}`);
  return c;
}

export function containerPort(c: Container, name: string): number {
  const p = c.ports?.find((x) => x.name === name);
  if (!p) throw new Error(`container ${c.name} has no port named ${name}`);
  return p.containerPort;
}

/**
 * The container's environment as the kubelet builds it: envFrom ConfigMaps first, then env entries
 * (which win). fieldRef metadata.name becomes `podName`.
 */
export function containerEnv(objects: K8sObject[], c: Container, podName: string): Record<string, string> {
  const env: Record<string, string> = {};
  for (const from of c.envFrom ?? []) {
    if (!from.configMapRef) throw new Error(`container ${c.name}: only configMapRef envFrom is supported`);
    Object.assign(env, find(objects, 'ConfigMap', from.configMapRef.name).data ?? {});
  }
  for (const e of c.env ?? []) {
    if (e.value !== undefined) env[e.name] = e.value;
    else if (e.valueFrom?.fieldRef?.fieldPath === 'metadata.name') env[e.name] = podName;
    else if (e.valueFrom?.configMapKeyRef) {
      const ref = e.valueFrom.configMapKeyRef;
      const v = find(objects, 'ConfigMap', ref.name).data?.[ref.key];
      if (v === undefined) throw new Error(`container ${c.name}: ConfigMap ${ref.name} has no key ${ref.key}`);
      env[e.name] = v;
    } else throw new Error(`container ${c.name}: env ${e.name} has a source this test does not model`);
  }
  return env;
}

/** The env var names an entry point reads, from its --help (commander prints "env: KV_X"). */
export function entryEnvNames(entry: string): Set<string> {
  const help = execFileSync(process.execPath, [join(REPO, entry), '--help'], { encoding: 'utf8', timeout: 20_000 });
  return new Set([...help.replace(/\s+/g, ' ').matchAll(/env: ([A-Z0-9_]+)/g)].map((m) => m[1]));
}

/** "package a.b; service C" from each .proto: the gRPC service names the code can serve. */
export function protoServices(protoDir = join(REPO, 'proto')): Set<string> {
  const names = new Set<string>();
  for (const f of readdirSync(protoDir).filter((x) => x.endsWith('.proto'))) {
    const text = readFileSync(join(protoDir, f), 'utf8');
    const pkg = /^\s*package\s+([\w.]+)\s*;/m.exec(text)?.[1];
    for (const m of text.matchAll(/^\s*service\s+(\w+)/gm)) names.add(pkg ? `${pkg}.${m[1]}` : m[1]);
  }
  return names;
}
