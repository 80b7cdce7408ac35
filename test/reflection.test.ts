// gRPC reflection on a real gateway lists, and describes, every service it serves: grpcurl needs that
// to call grpc.health.v1.Health/Check or the admin RPCs without proto files.
import * as grpc from '@grpc/grpc-js';
import * as protoLoader from '@grpc/proto-loader';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ROOT, TestCluster } from './helpers/processes.js';

interface ReflectionResponse {
  list_services_response?: { service: { name: string }[] };
  file_descriptor_response?: { file_descriptor_proto: Buffer[] };
  error_response?: { error_code: number; error_message: string };
}

let cluster: TestCluster;
let client: grpc.Client;

beforeAll(async () => {
  cluster = await TestCluster.start({ workers: 1 });
  const def = protoLoader.loadSync(join(ROOT, 'node_modules/@grpc/reflection/build/proto/grpc/reflection/v1/reflection.proto'), { keepCase: true, oneofs: true });
  const pkg = grpc.loadPackageDefinition(def) as unknown as { grpc: { reflection: { v1: { ServerReflection: grpc.ServiceClientConstructor } } } };
  client = new pkg.grpc.reflection.v1.ServerReflection(cluster.address, grpc.credentials.createInsecure());
});
afterAll(async () => {
  client?.close();
  await cluster?.stop();
});

/** One request on the bidirectional ServerReflectionInfo stream, as grpcurl sends them. */
function ask(request: object): Promise<ReflectionResponse> {
  return new Promise((resolve, reject) => {
    const call = (client as unknown as { ServerReflectionInfo(o: grpc.CallOptions): grpc.ClientDuplexStream<object, ReflectionResponse> }).ServerReflectionInfo({
      deadline: Date.now() + 10_000,
    });
    call.once('data', (r: ReflectionResponse) => {
      resolve(r);
      call.end();
    });
    call.once('error', reject);
    call.write(request);
  });
}

const SERVICES = ['grpc.health.v1.Health', 'kvstore.KeyValueStore', 'kvstore.admin.Admin'];

describe('gateway reflection', () => {
  it('lists the public, admin and health services', async () => {
    const r = await ask({ list_services: '' });
    expect(r.error_response).toBeUndefined();
    expect(r.list_services_response!.service.map((s) => s.name)).toEqual(expect.arrayContaining(SERVICES));
  });

  it.each(SERVICES)('describes %s (file_containing_symbol)', async (symbol) => {
    const r = await ask({ file_containing_symbol: symbol });
    expect(r.error_response, JSON.stringify(r.error_response)).toBeUndefined();
    const files = r.file_descriptor_response!.file_descriptor_proto;
    expect(files.length).toBeGreaterThan(0);
    // The service's own name appears in the descriptor of the file that declares it.
    const service = symbol.slice(symbol.lastIndexOf('.') + 1);
    expect(files.some((f) => f.includes(Buffer.from(service)))).toBe(true);
  });
});
