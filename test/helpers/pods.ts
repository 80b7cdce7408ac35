// Runs the containers of rendered Kubernetes workloads as local processes: each "pod" gets its own
// loopback address (Linux routes all of 127/8 to lo), the container's command and env as rendered,
// its volumes as folders under one temp dir, and cluster DNS from test/helpers/cluster-dns.mjs.
import { spawn, type ChildProcess } from 'node:child_process';
import { chmodSync, copyFileSync, mkdirSync, renameSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import * as grpc from '@grpc/grpc-js';
import { service as healthService } from 'grpc-health-check';
import { IMAGE_APP_DIR, REPO, containerEnv, type Container, type K8sObject, type Probe } from './k8s.js';

const DNS_PRELOAD = join(REPO, 'test', 'helpers', 'cluster-dns.mjs');
const HealthClient = grpc.makeGenericClientConstructor(healthService, 'Health');

export interface Pod {
  name: string;
  ip: string;
  container: Container;
  proc: ChildProcess;
  exit: Promise<number | null>;
  /** Host folder standing in for each mounted volume, by volume name. */
  volumes: Record<string, string>;
  output(): string;
}

export class LocalCluster {
  private readonly dns: { names: Record<string, string>; domains: string[] } = { names: {}, domains: [] };
  private readonly dnsFile: string;
  private incarnation = 0;
  readonly pods = new Set<Pod>();

  /**
   * `secrets`: the cluster's Secrets, name -> key -> host file with the value. A pod's Secret volume
   * becomes a folder holding one file per key, as the kubelet projects it; a Secret that does not exist
   * keeps the pod from starting (here: an error), unless the volume is optional.
   */
  constructor(
    private readonly objects: K8sObject[],
    readonly root: string,
    dnsDomains: string[],
    private readonly secrets: Record<string, Record<string, string>> = {},
  ) {
    this.dnsFile = join(root, 'cluster-dns.json');
    this.dns.domains = dnsDomains;
    this.writeDns();
  }

  setDns(name: string, ip: string | undefined): void {
    if (ip === undefined) delete this.dns.names[name];
    else this.dns.names[name] = ip;
    this.writeDns();
  }

  private writeDns(): void {
    // Renamed into place so a lookup never reads half a table.
    writeFileSync(`${this.dnsFile}.next`, JSON.stringify(this.dns));
    renameSync(`${this.dnsFile}.next`, this.dnsFile);
  }

  /** Starts one pod of `workload` (a StatefulSet or Deployment) as the kubelet would, on `ip`. */
  start(workload: K8sObject, podName: string, ip: string): Pod {
    const spec = workload.spec.template.spec;
    const [c] = spec.containers as Container[];
    const claims = new Set(((workload.spec.volumeClaimTemplates ?? []) as { metadata: { name: string } }[]).map((t) => t.metadata.name));
    const incarnation = ++this.incarnation;
    const volumes: Record<string, string> = {};
    for (const m of c.volumeMounts ?? []) {
      // A claim follows the pod's name across restarts (PVC <claim>-<pod>); an emptyDir dies with the pod.
      volumes[m.name] = claims.has(m.name)
        ? join(this.root, 'pvc', `${m.name}-${podName}`)
        : join(this.root, 'pods', `${podName}.${incarnation}`, m.name);
      mkdirSync(volumes[m.name], { recursive: true });
      const source = ((spec.volumes ?? []) as { name: string; secret?: { secretName: string; defaultMode?: number; optional?: boolean } }[]).find(
        (v) => v.name === m.name,
      )?.secret;
      if (source) {
        const secret = this.secrets[source.secretName];
        if (!secret && !source.optional) throw new Error(`pod ${podName}: Secret ${source.secretName} (volume ${m.name}) does not exist`);
        for (const [key, file] of Object.entries(secret ?? {})) {
          copyFileSync(file, join(volumes[m.name], key));
          chmodSync(join(volumes[m.name], key), source.defaultMode ?? 0o644);
        }
      }
    }
    const hostPath = (p: string): string => {
      for (const m of c.volumeMounts ?? []) {
        if (p === m.mountPath || p.startsWith(`${m.mountPath}/`)) return volumes[m.name] + p.slice(m.mountPath.length);
      }
      return p;
    };
    const env: Record<string, string> = {};
    for (const [k, v] of Object.entries(containerEnv(this.objects, c, podName))) env[k] = v.startsWith('/') ? hostPath(v) : v;
    const command = [...(c.command ?? []), ...(c.args ?? [])];
    if (command[0] !== 'node' || !command[1]?.startsWith(`${IMAGE_APP_DIR}/`)) throw new Error(`unexpected command ${JSON.stringify(command)}`);
    const args = [join(REPO, command[1].slice(IMAGE_APP_DIR.length + 1)), ...command.slice(2)];
    const proc = spawn(process.execPath, args, {
      cwd: REPO,
      stdio: ['ignore', 'pipe', 'pipe'],
      env: {
        PATH: process.env.PATH ?? '/usr/bin:/bin',
        ...env,
        // What the pod's network namespace gives for free: its own address. The manifests leave KV_HOST
        // at 0.0.0.0, which here would make every pod claim the same port on every address.
        KV_HOST: ip,
        TMPDIR: hostPath(env.TMPDIR ?? '/tmp'),
        HOSTNAME: podName,
        NODE_OPTIONS: `--import=${DNS_PRELOAD}`,
        KVTEST_CLUSTER_DNS: this.dnsFile,
      },
    });
    let out = '';
    const keep = (b: Buffer): void => {
      out = (out + b.toString()).slice(-8000);
    };
    proc.stdout!.on('data', keep);
    proc.stderr!.on('data', keep);
    const exit = new Promise<number | null>((resolve) => proc.once('exit', (code) => resolve(code)));
    const pod: Pod = { name: podName, ip, container: c, proc, exit, volumes, output: () => out };
    this.pods.add(pod);
    void exit.then(() => this.pods.delete(pod));
    return pod;
  }

  /** SIGTERM, then SIGKILL after graceSeconds, as the kubelet does; resolves to the exit code. */
  async stop(pod: Pod, graceSeconds: number): Promise<number | null> {
    if (pod.proc.exitCode !== null || pod.proc.signalCode !== null) return pod.proc.exitCode;
    pod.proc.kill('SIGTERM');
    const timer = setTimeout(() => pod.proc.kill('SIGKILL'), graceSeconds * 1000);
    try {
      return await pod.exit;
    } finally {
      clearTimeout(timer);
    }
  }

  async stopAll(): Promise<void> {
    await Promise.all([...this.pods].map((p) => this.stop(p, 5)));
  }
}

/** One run of a gRPC health probe as the kubelet's `grpc:` probe does it; true when SERVING. */
export async function grpcProbe(ip: string, probe: Probe, timeoutMs = 1000): Promise<boolean> {
  if (!probe.grpc) throw new Error('not a grpc probe');
  const client = new HealthClient(`${ip}:${probe.grpc.port}`, grpc.credentials.createInsecure());
  try {
    return await new Promise<boolean>((resolve) => {
      client.makeUnaryRequest(
        '/grpc.health.v1.Health/Check',
        (arg: { service: string }) => healthService.Check.requestSerialize(arg),
        (buf: Buffer) => healthService.Check.responseDeserialize(buf) as { status: string | number },
        { service: probe.grpc!.service ?? '' },
        { deadline: Date.now() + timeoutMs },
        (err, reply) => resolve(!err && (reply?.status === 'SERVING' || reply?.status === 1)),
      );
    });
  } finally {
    client.close();
  }
}

/** One run of an `httpGet` probe as the kubelet does it: success is a status from 200 to 399. */
export async function httpProbe(ip: string, container: Container, probe: Probe, timeoutMs = 1000): Promise<boolean> {
  if (!probe.httpGet) throw new Error('not an httpGet probe');
  const { port, path = '/', scheme = 'HTTP' } = probe.httpGet;
  if (scheme !== 'HTTP') throw new Error(`httpGet scheme ${scheme} is not modelled`);
  const number = typeof port === 'number' ? port : container.ports?.find((p) => p.name === port)?.containerPort;
  if (number === undefined) throw new Error(`container ${container.name} has no port named ${String(port)}`);
  try {
    const res = await fetch(`http://${ip}:${number}${path}`, { signal: AbortSignal.timeout(timeoutMs), redirect: 'manual' });
    await res.arrayBuffer();
    return res.status >= 200 && res.status < 400;
  } catch {
    return false;
  }
}

/** One run of whichever probe it is (grpc or httpGet). */
export function runProbe(pod: Pod, probe: Probe): Promise<boolean> {
  return probe.httpGet ? httpProbe(pod.ip, pod.container, probe) : grpcProbe(pod.ip, probe);
}

/** Waits, bounded, until the pod's startup and readiness probes pass. */
export async function waitReady(pod: Pod, timeoutMs: number): Promise<void> {
  const until = Date.now() + timeoutMs;
  const probes = [pod.container.startupProbe, pod.container.readinessProbe].filter((p): p is Probe => p !== undefined);
  for (const probe of probes) {
    while (!(await runProbe(pod, probe))) {
      if (pod.proc.exitCode !== null) throw new Error(`pod ${pod.name} exited with ${pod.proc.exitCode}:\n${pod.output()}`);
      if (Date.now() > until) throw new Error(`pod ${pod.name} not ready after ${timeoutMs} ms:\n${pod.output()}`);
      await new Promise((r) => setTimeout(r, 100));
    }
  }
}
