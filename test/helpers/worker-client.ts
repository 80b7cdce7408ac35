// Direct calls to a worker's internal service, for tests that inspect where keys live.
import * as grpc from '@grpc/grpc-js';
import { workerApi, type KeyChunk } from '../../shared/proto.js';

export function scanWorkerKeys(port: number): Promise<string[]> {
  const client = new (workerApi().Worker)(`127.0.0.1:${port}`, grpc.credentials.createInsecure());
  return new Promise((resolve, reject) => {
    const keys: string[] = [];
    const call = (client as unknown as { ScanKeys(r: object, o: object): grpc.ClientReadableStream<KeyChunk> }).ScanKeys(
      { after: '', limit: 0 },
      { deadline: Date.now() + 30_000 },
    );
    call.on('data', (c: KeyChunk) => keys.push(...c.keys));
    call.on('error', (e) => {
      client.close();
      reject(e);
    });
    call.on('end', () => {
      client.close();
      resolve(keys);
    });
  });
}
