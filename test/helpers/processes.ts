// Starts real worker and gateway processes on 127.0.0.1 with ports picked by the OS, in a temp folder,
// and stops exactly the processes it started.
import { fork, type ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';

export const ROOT = fileURLToPath(new URL('../../', import.meta.url));
export const dist = (p: string): string => join(ROOT, 'dist', p);

export interface Listening {
  type: 'listening';
  name: string;
  port: number;
  metricsPort: number;
}

export class Proc {
  child: ChildProcess | undefined;
  listening: Listening | undefined;
  readonly output: string[] = [];

  constructor(
    readonly script: string,
    public args: string[],
    readonly env: Record<string, string> = {},
  ) {}

  get pid(): number {
    if (!this.child?.pid) throw new Error(`${this.script} is not running`);
    return this.child.pid;
  }

  start(timeoutMs = 20_000): Promise<Listening> {
    return new Promise((resolve, reject) => {
      const child = fork(this.script, this.args, {
        stdio: ['ignore', 'pipe', 'pipe', 'ipc'],
        env: { ...process.env, KV_LOG_LEVEL: 'warn', ...this.env },
      });
      this.child = child;
      const keep = (d: Buffer): void => {
        this.output.push(d.toString());
        if (this.output.length > 200) this.output.shift();
      };
      child.stdout!.on('data', keep);
      child.stderr!.on('data', keep);
      const timer = setTimeout(() => reject(new Error(`${this.script} did not report listening in ${timeoutMs} ms:\n${this.output.join('')}`)), timeoutMs);
      child.on('message', (m: Listening) => {
        if (m?.type !== 'listening') return;
        clearTimeout(timer);
        this.listening = m;
        resolve(m);
      });
      child.on('exit', (code, signal) => {
        clearTimeout(timer);
        if (!this.listening || this.child === child) reject(new Error(`${this.script} exited (code ${code}, signal ${signal}):\n${this.output.join('')}`));
      });
    });
  }

  /** Resolves with the exit code (or signal name) once the process is gone. */
  exited(): Promise<number | string> {
    const child = this.child;
    if (!child) return Promise.resolve(0);
    if (child.exitCode !== null) return Promise.resolve(child.exitCode);
    if (child.signalCode) return Promise.resolve(child.signalCode);
    return new Promise((resolve) => child.once('exit', (code, signal) => resolve(code ?? signal ?? -1)));
  }

  kill(signal: NodeJS.Signals): void {
    this.child?.kill(signal);
  }

  async stop(signal: NodeJS.Signals = 'SIGTERM', timeoutMs = 15_000): Promise<number | string> {
    const child = this.child;
    if (!child || child.exitCode !== null || child.signalCode) return child?.exitCode ?? 0;
    const done = this.exited();
    child.kill(signal);
    const timer = setTimeout(() => child.kill('SIGKILL'), timeoutMs);
    const result = await done;
    clearTimeout(timer);
    return result;
  }
}

export interface ClusterOptions {
  workers?: number;
  names?: string[];
  workerArgs?: string[];
  gatewayArgs?: string[];
  env?: Record<string, string>;
  dataDir?: string;
}

export class TestCluster {
  readonly workers = new Map<string, Proc>();
  private readonly extraGateways: Proc[] = [];
  gateway!: Proc;
  address = '';

  constructor(
    readonly dataDir: string,
    private readonly ownsDir: boolean,
    private readonly options: ClusterOptions,
  ) {}

  static async start(options: ClusterOptions = {}): Promise<TestCluster> {
    const dataDir = options.dataDir ?? mkdtempSync(join(tmpdir(), 'kvstore-test-'));
    const cluster = new TestCluster(dataDir, !options.dataDir, options);
    try {
      const names = options.names ?? Array.from({ length: options.workers ?? 3 }, (_, i) => `worker-${i}`);
      await Promise.all(names.map((n) => cluster.startWorker(n)));
      await cluster.startGateway();
    } catch (err) {
      await cluster.stop();
      throw err;
    }
    return cluster;
  }

  get backupDir(): string {
    return join(this.dataDir, 'backups');
  }

  members(): string {
    return [...this.workers.entries()].map(([name, p]) => `${name}=127.0.0.1:${p.listening!.port}`).join(',');
  }

  async startWorker(name: string, port = 0): Promise<Proc> {
    const existing = this.workers.get(name);
    // A restarted worker comes back on its old port, as a pod keeps its name.
    const p = existing?.listening?.port ?? port;
    const proc = new Proc(
      dist('worker/main.js'),
      ['--name', name, '--host', '127.0.0.1', '--port', String(p), '--metrics-port', '0', '--data-dir', this.dataDir, ...(this.options.workerArgs ?? [])],
      this.options.env,
    );
    this.workers.set(name, proc);
    await proc.start();
    return proc;
  }

  private gatewayProc(port: number, extraArgs: string[]): Proc {
    return new Proc(
      dist('gateway/main.js'),
      ['--host', '127.0.0.1', '--port', String(port), '--metrics-port', '0', '--members', this.members(), '--data-dir', this.dataDir, ...(this.options.gatewayArgs ?? []), ...extraArgs],
      this.options.env,
    );
  }

  async startGateway(extraArgs: string[] = []): Promise<Proc> {
    this.gateway = this.gatewayProc(this.gateway?.listening?.port ?? 0, extraArgs);
    const l = await this.gateway.start();
    this.address = `127.0.0.1:${l.port}`;
    return this.gateway;
  }

  /** Another gateway replica over the same workers (stopped by stop()). */
  async startExtraGateway(extraArgs: string[] = []): Promise<{ proc: Proc; address: string }> {
    const proc = this.gatewayProc(0, extraArgs);
    this.extraGateways.push(proc);
    return { proc, address: `127.0.0.1:${(await proc.start()).port}` };
  }

  worker(name: string): Proc {
    const w = this.workers.get(name);
    if (!w) throw new Error(`no worker ${name}`);
    return w;
  }

  async stop(): Promise<void> {
    await Promise.all(this.extraGateways.map((g) => g.stop().catch(() => undefined)));
    await this.gateway?.stop().catch(() => undefined);
    await Promise.all([...this.workers.values()].map((w) => w.stop().catch(() => undefined)));
    if (this.ownsDir) rmSync(this.dataDir, { recursive: true, force: true });
  }
}

export async function waitFor<T>(what: string, fn: () => Promise<T | undefined | false>, timeoutMs = 15_000, everyMs = 50): Promise<T> {
  const until = Date.now() + timeoutMs;
  let last: unknown;
  while (Date.now() < until) {
    try {
      const v = await fn();
      if (v) return v;
    } catch (err) {
      last = err;
    }
    await new Promise((r) => setTimeout(r, everyMs));
  }
  throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}${last ? `: ${String(last)}` : ''}`);
}

export interface EmbeddedStore {
  proc: Proc;
  address: string;
  dataDir: string;
  /** Latest pid of each worker, from its "worker listening" log line. */
  workerPids: Map<string, number>;
  workerPorts: Map<string, number>;
  stop(): Promise<number | string>;
}

/** `npm start` as a user runs it (the supervisor), on free ports, reading its JSON log lines. */
export async function startEmbedded(extraArgs: string[] = [], dataDir?: string, env: Record<string, string> = {}): Promise<EmbeddedStore> {
  const dir = dataDir ?? mkdtempSync(join(tmpdir(), 'kvstore-embedded-'));
  const proc = new Proc(dist('cli/start.js'), ['--port', '0', '--metrics-port', '0', '--worker-base-port', '0', '--data-dir', dir, ...extraArgs], {
    KV_LOG_LEVEL: 'info',
    ...env,
  });
  const workerPids = new Map<string, number>();
  const workerPorts = new Map<string, number>();
  let address = '';
  let buffered = '';
  const ready = new Promise<void>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`store not ready in 30 s:\n${proc.output.join('')}`)), 30_000);
    const onLine = (line: string): void => {
      let rec: { msg?: string; component?: string; worker?: string; pid?: number; port?: number };
      try {
        rec = JSON.parse(line);
      } catch {
        return;
      }
      if (rec.component === 'worker' && rec.msg === 'worker listening' && rec.worker && rec.pid) {
        workerPids.set(rec.worker, rec.pid);
        workerPorts.set(rec.worker, rec.port!);
      }
      if (rec.component === 'supervisor' && rec.msg?.startsWith('kvstore ready')) {
        address = `127.0.0.1:${rec.port}`;
        clearTimeout(timer);
        resolve();
      }
    };
    proc.start(30_000).catch(reject);
    proc.child!.stdout!.on('data', (d: Buffer) => {
      buffered += d.toString();
      let nl: number;
      while ((nl = buffered.indexOf('\n')) >= 0) {
        onLine(buffered.slice(0, nl));
        buffered = buffered.slice(nl + 1);
      }
    });
  });
  await ready;
  return {
    proc,
    address,
    dataDir: dir,
    workerPids,
    workerPorts,
    stop: async () => {
      const code = await proc.stop('SIGTERM', 20_000);
      if (!dataDir) rmSync(dir, { recursive: true, force: true });
      return code;
    },
  };
}
