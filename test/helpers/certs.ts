// Throwaway certificates for the TLS tests, made with the openssl commands docs/security.md gives
// operators (EC P-256, one day), so the documented recipe is the tested one.
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

export interface CertFiles {
  cert: string;
  key: string;
}

export interface TestCerts {
  dir: string;
  /** Public side: the CA clients trust, the gateway's server certificate, a client certificate. */
  publicCa: string;
  gateway: CertFiles;
  client: CertFiles;
  /** Internal side: its CA, a worker server certificate for the name "kv-worker", a gateway client certificate. */
  internalCa: string;
  worker: CertFiles;
  gatewayInternal: CertFiles;
  /** Both usages and 127.0.0.1, for the embedded store where one certificate serves gateway and workers. */
  embeddedInternal: CertFiles;
  /** Signed by a CA nobody trusts. */
  rogueCa: string;
  rogueClient: CertFiles;
  /** Every private key's PEM, for leak checks. */
  privateKeys(): string[];
  remove(): void;
}

const openssl = (dir: string, args: string[]): void => {
  execFileSync('openssl', args, { cwd: dir, stdio: ['ignore', 'ignore', 'pipe'], timeout: 20_000 });
};

function makeCa(dir: string, name: string): string {
  openssl(dir, [
    'req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes',
    '-keyout', `${name}.key`, '-out', `${name}.crt`, '-days', '1', '-subj', `/CN=${name}`,
    '-addext', 'basicConstraints=critical,CA:TRUE', '-addext', 'keyUsage=critical,keyCertSign,cRLSign',
  ]);
  return join(dir, `${name}.crt`);
}

function makeLeaf(dir: string, ca: string, name: string, usage: string, san?: string): CertFiles {
  const ext = ['basicConstraints=CA:FALSE', 'keyUsage=critical,digitalSignature', `extendedKeyUsage=${usage}`, ...(san ? [`subjectAltName=${san}`] : [])];
  writeFileSync(join(dir, `${name}.ext`), `${ext.join('\n')}\n`);
  openssl(dir, ['req', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes', '-keyout', `${name}.key`, '-out', `${name}.csr`, '-subj', `/CN=${name}`]);
  openssl(dir, ['x509', '-req', '-in', `${name}.csr`, '-CA', `${ca}.crt`, '-CAkey', `${ca}.key`, '-CAcreateserial', '-days', '1', '-out', `${name}.crt`, '-extfile', `${name}.ext`]);
  return { cert: join(dir, `${name}.crt`), key: join(dir, `${name}.key`) };
}

export function makeTestCerts(): TestCerts {
  const dir = mkdtempSync(join(tmpdir(), 'kvstore-certs-'));
  try {
    const certs: TestCerts = {
      dir,
      publicCa: makeCa(dir, 'public-ca'),
      gateway: makeLeaf(dir, 'public-ca', 'gateway', 'serverAuth', 'DNS:localhost,IP:127.0.0.1'),
      client: makeLeaf(dir, 'public-ca', 'client', 'clientAuth'),
      internalCa: makeCa(dir, 'internal-ca'),
      worker: makeLeaf(dir, 'internal-ca', 'worker', 'serverAuth', 'DNS:kv-worker'),
      gatewayInternal: makeLeaf(dir, 'internal-ca', 'gateway-internal', 'clientAuth'),
      embeddedInternal: makeLeaf(dir, 'internal-ca', 'embedded', 'serverAuth,clientAuth', 'DNS:localhost,IP:127.0.0.1'),
      rogueCa: makeCa(dir, 'rogue-ca'),
      rogueClient: makeLeaf(dir, 'rogue-ca', 'rogue-client', 'clientAuth'),
      privateKeys: () =>
        ['public-ca', 'gateway', 'client', 'internal-ca', 'worker', 'gateway-internal', 'embedded'].map((n) => readFileSync(join(dir, `${n}.key`), 'utf8')),
      remove: () => rmSync(dir, { recursive: true, force: true }),
    };
    return certs;
  } catch (err) {
    rmSync(dir, { recursive: true, force: true });
    throw err;
  }
}

export const read = (file: string): Buffer => readFileSync(file);
