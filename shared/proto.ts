import { existsSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import * as grpc from '@grpc/grpc-js';
import * as protoLoader from '@grpc/proto-loader';
import { protoPath as healthProtoPath } from 'grpc-health-check';

// Compiled code runs from dist/shared, tests from shared/: walk up to the folder holding proto/.
function findProtoDir(): string {
  let dir = dirname(fileURLToPath(import.meta.url));
  for (let i = 0; i < 4; i++) {
    const candidate = join(dir, 'proto');
    if (existsSync(join(candidate, 'kvstore.proto'))) return candidate;
    dir = dirname(dir);
  }
  throw new Error(`proto/kvstore.proto not found above ${fileURLToPath(import.meta.url)}`);
}

export const PROTO_DIR = findProtoDir();

const LOADER_OPTIONS: protoLoader.Options = {
  keepCase: true,
  longs: Number,
  enums: Number,
  defaults: true,
  oneofs: true,
};

export function loadPackageDefinition(file: string): protoLoader.PackageDefinition {
  return protoLoader.loadSync(join(PROTO_DIR, file), LOADER_OPTIONS);
}

// grpc.loadPackageDefinition returns an untyped tree; these helpers pin the shapes we rely on.
type ServiceCtor = grpc.ServiceClientConstructor;

export interface PublicProto {
  definition: protoLoader.PackageDefinition;
  KeyValueStore: ServiceCtor;
}

export interface WorkerProto {
  definition: protoLoader.PackageDefinition;
  Worker: ServiceCtor;
}

export interface AdminProto {
  definition: protoLoader.PackageDefinition;
  Admin: ServiceCtor;
}

let publicProto: PublicProto | undefined;
let adminProto: AdminProto | undefined;

export function adminApi(): AdminProto {
  if (!adminProto) {
    const definition = loadPackageDefinition('admin.proto');
    const pkg = grpc.loadPackageDefinition(definition) as unknown as { kvstore: { admin: { Admin: ServiceCtor } } };
    adminProto = { definition, Admin: pkg.kvstore.admin.Admin };
  }
  return adminProto;
}

export interface AdminMember {
  name: string;
  address: string;
}
export interface AdminWorkerStatus {
  name: string;
  address: string;
  role: string;
  reachable: boolean;
  keys: number;
  epoch: number;
  error: string;
}
export interface ClusterStatus {
  epoch: number;
  phase: string;
  members: AdminMember[];
  previous: AdminMember[];
  keys_moved: number;
  keys_remaining: number;
  workers: AdminWorkerStatus[];
  message: string;
}
let workerProto: WorkerProto | undefined;

export function publicApi(): PublicProto {
  if (!publicProto) {
    const definition = loadPackageDefinition('kvstore.proto');
    const pkg = grpc.loadPackageDefinition(definition) as unknown as { kvstore: { KeyValueStore: ServiceCtor } };
    publicProto = { definition, KeyValueStore: pkg.kvstore.KeyValueStore };
  }
  return publicProto;
}

/** grpc.health.v1, as grpc-health-check ships it: for reflection, which lists only what it is given. */
export function healthDefinition(): protoLoader.PackageDefinition {
  // Loaded by its path below the package's proto/ folder, so the file is named as grpcurl expects.
  return protoLoader.loadSync('health/v1/health.proto', { ...LOADER_OPTIONS, includeDirs: [join(dirname(healthProtoPath), '..', '..')] });
}

export function workerApi(): WorkerProto {
  if (!workerProto) {
    const definition = loadPackageDefinition('worker.proto');
    const pkg = grpc.loadPackageDefinition(definition) as unknown as {
      kvstore: { internal: { Worker: ServiceCtor } };
    };
    workerProto = { definition, Worker: pkg.kvstore.internal.Worker };
  }
  return workerProto;
}

export const OpType = { GET: 0, PUT: 1, DELETE: 2, COPY: 3, DROP: 4 } as const;
export type OpTypeValue = (typeof OpType)[keyof typeof OpType];

export interface Op {
  id: number;
  type: OpTypeValue;
  key: string;
  value: string;
}
export interface OpBatch {
  epoch: number;
  ops: Op[];
}
export interface OpResult {
  id: number;
  code: number;
  found: boolean;
  value: string;
  message: string;
  tombstone: boolean;
}
export interface ResultBatch {
  results: OpResult[];
  epoch: number;
}
export interface ScanRequest {
  after: string;
  limit: number;
  epoch: number;
  moving_only: boolean;
  with_values: boolean;
  with_tombstones: boolean;
}
export interface KeyChunk {
  keys: string[];
  values: string[];
  tombstones: string[];
}
export interface MembershipReply {
  applied: boolean;
  state_json: string;
  epoch: number;
}
/** The public Backup answer: fields 1-2 of the API reference, 3-7 added wire-compatibly. */
export interface BackupStatus {
  success: boolean;
  message: string;
  backup_id: string;
  location: string;
  keys: number;
  bytes: number;
  failed_workers: string[];
}
export interface SnapshotReply {
  worker: string;
  file: string;
  keys: number;
  bytes: number;
  sha256: string;
  seconds: number;
}
export interface StatusReply {
  worker: string;
  keys: number;
  db_bytes: number;
  wal_bytes: number;
  epoch: number;
  member: boolean;
  tombstones: number;
}
