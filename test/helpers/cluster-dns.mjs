// Cluster DNS for the "pods" of test/k8s-local-run.test.ts, loaded into each process with
// NODE_OPTIONS=--import. grpc-js resolves a target with dns.promises.lookup (and asks
// dns.promises.resolveTxt for a service config), so those and their callback forms answer from a
// JSON table that the test rewrites when a pod moves: {"names": {"kv-worker-0.kv-worker": "127.x.y.2"},
// "domains": ["kv-worker"]}. A name under one of the domains that is not in the table fails with
// ENOTFOUND, as a deleted pod's record does, and no lookup for it ever leaves the machine.
// Plain JavaScript on purpose: Node 20 loads it before any TypeScript tooling exists.
import dns from 'node:dns';
import { readFileSync } from 'node:fs';
import process from 'node:process';

const tableFile = process.env.KVTEST_CLUSTER_DNS;

function table() {
  // Read on every lookup: the test moves a pod by rewriting the file, as cluster DNS would change.
  try {
    return JSON.parse(readFileSync(tableFile, 'utf8'));
  } catch {
    return { names: {}, domains: [] };
  }
}

/** undefined: not a cluster name; null: a cluster name with no record; else the address. */
function answer(hostname) {
  const name = String(hostname).toLowerCase().replace(/\.$/, '');
  const { names = {}, domains = [] } = table();
  if (Object.hasOwn(names, name)) return names[name];
  if (domains.some((d) => name === d || name.endsWith(`.${d}`))) return null;
  return undefined;
}

function notFound(syscall, hostname, code = 'ENOTFOUND') {
  const err = new Error(`${syscall} ${code} ${hostname}`);
  Object.assign(err, { code, errno: code === 'ENOTFOUND' ? -3008 : undefined, syscall, hostname });
  return err;
}

function result(address, options) {
  const all = typeof options === 'object' && options !== null && options.all === true;
  return all ? [{ address, family: 4 }] : { address, family: 4 };
}

const promises = dns.promises;
const realLookup = dns.lookup;
const realPromisesLookup = promises.lookup;
const realResolveTxt = dns.resolveTxt;
const realPromisesResolveTxt = promises.resolveTxt;

dns.lookup = function lookup(hostname, options, callback) {
  const cb = typeof options === 'function' ? options : callback;
  const address = answer(hostname);
  if (address === undefined) return realLookup.call(this, hostname, options, callback);
  const opts = typeof options === 'function' ? {} : options;
  process.nextTick(() => {
    if (address === null) cb(notFound('getaddrinfo', hostname));
    else if (typeof opts === 'object' && opts !== null && opts.all === true) cb(null, result(address, opts));
    else cb(null, address, 4);
  });
  return {};
};

promises.lookup = async function lookup(hostname, options) {
  const address = answer(hostname);
  if (address === undefined) return realPromisesLookup.call(this, hostname, options);
  if (address === null) throw notFound('getaddrinfo', hostname);
  return result(address, options);
};

dns.resolveTxt = function resolveTxt(hostname, callback) {
  if (answer(hostname) === undefined) return realResolveTxt.call(this, hostname, callback);
  process.nextTick(() => callback(notFound('queryTxt', hostname, 'ENODATA')));
  return {};
};

promises.resolveTxt = async function resolveTxt(hostname) {
  if (answer(hostname) === undefined) return realPromisesResolveTxt.call(this, hostname);
  throw notFound('queryTxt', hostname, 'ENODATA');
};
