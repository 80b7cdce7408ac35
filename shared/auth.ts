// Authorisation of the gateway's admin RPCs (cluster membership changes) with a bearer token.
//
// Policy, chosen so that turning security on can never leave admin calls open by accident:
//   token configured           -> every admin call must carry `authorization: Bearer <token>`
//   no token, security off     -> open (the insecure single-machine default: everything is open there)
//   no token, security on (TLS)-> every admin call is refused: the operator has to choose a token
// The token comes from KV_ADMIN_TOKEN or a file (--admin-token-file, a Kubernetes Secret mount); it has
// no flag of its own because command lines are readable by every user through ps.
import { createHash, timingSafeEqual } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { Metadata, status } from '@grpc/grpc-js';
import { Option } from 'commander';
import { KvError } from './errors.js';
import { ENV } from './settings.js';

/** Short tokens can be guessed; `openssl rand -hex 32` gives 64 characters. */
export const MIN_TOKEN_LENGTH = 16;

export type AdminAuthMode = 'token' | 'open' | 'disabled';

export interface AdminAuth {
  readonly mode: AdminAuthMode;
  /** Returns if the call may proceed; throws KvError(UNAUTHENTICATED or PERMISSION_DENIED) otherwise. */
  check(metadata: Metadata): void;
}

export function adminTokenFileOption(): Option {
  return new Option('--admin-token-file <file>', `file holding the admin RPC token (or set ${ENV.adminToken})`).env(ENV.adminTokenFile);
}

/** The configured token, from the environment or a file; undefined when neither is set. */
export function readAdminToken(file: string | undefined, env: NodeJS.ProcessEnv = process.env): string | undefined {
  const fromEnv = env[ENV.adminToken];
  if (fromEnv && file) throw new Error(`set ${ENV.adminToken} or ${ENV.adminTokenFile} (--admin-token-file), not both`);
  let token: string | undefined;
  let source: string = ENV.adminToken;
  if (file) {
    source = file;
    try {
      token = readFileSync(file, 'utf8');
    } catch (err) {
      throw new Error(`--admin-token-file: cannot read ${file}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`, { cause: err });
    }
  } else token = fromEnv;
  if (token === undefined || token === '') return undefined;
  // Secret files and `echo` usually end in a newline that is not part of the token.
  token = token.trim();
  // Header values are visible ASCII; a token that cannot travel in metadata would lock everyone out.
  if (!/^[\x21-\x7e]+$/.test(token)) throw new Error(`admin token from ${source} must be printable ASCII without spaces`);
  if (token.length < MIN_TOKEN_LENGTH) throw new Error(`admin token from ${source} is too short: at least ${MIN_TOKEN_LENGTH} characters (try: openssl rand -hex 32)`);
  return token;
}

// Hashing first makes both sides the same length, so the comparison time says nothing about the
// token's length or how many leading characters matched.
const digest = (s: string): Buffer => createHash('sha256').update(s, 'utf8').digest();

export function createAdminAuth(opts: { token: string | undefined; securityOn: boolean }): AdminAuth {
  if (opts.token === undefined) {
    if (!opts.securityOn) return { mode: 'open', check: () => undefined };
    return {
      mode: 'disabled',
      check: () => {
        throw new KvError(
          status.PERMISSION_DENIED,
          `admin RPCs are disabled: TLS is on and the gateway has no admin token (set ${ENV.adminToken} or --admin-token-file)`,
        );
      },
    };
  }
  const expected = digest(opts.token);
  return {
    mode: 'token',
    check: (metadata) => {
      const values = metadata.get('authorization');
      if (values.length === 0) throw new KvError(status.UNAUTHENTICATED, 'admin RPCs need an "authorization: Bearer <token>" header (kvctl --admin-token)');
      if (values.length > 1) throw new KvError(status.UNAUTHENTICATED, 'more than one authorization header');
      const m = /^Bearer +(\S+) *$/i.exec(String(values[0]));
      if (!m) throw new KvError(status.UNAUTHENTICATED, 'authorization header must be "Bearer <token>"');
      // Never echo the presented token back: a near-miss in an error message is a leak.
      if (!timingSafeEqual(digest(m[1]), expected)) throw new KvError(status.UNAUTHENTICATED, 'admin token is not valid');
    },
  };
}

/** Call metadata carrying the admin token, for kvctl and tests. */
export function adminMetadata(token: string | undefined): Metadata {
  const md = new Metadata();
  if (token) md.set('authorization', `Bearer ${token}`);
  return md;
}
