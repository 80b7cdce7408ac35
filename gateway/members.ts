// Parses the worker list: "name=host:port" entries, or bare names resolved through an address
// template such as "{name}.kv-worker.kvstore.svc.cluster.local:50052" (Kubernetes StatefulSet DNS).
export interface Member {
  name: string;
  address: string;
}

const NAME = /^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$/;

export function parseMembers(spec: string, template?: string): Member[] {
  const entries = spec
    .split(',')
    .map((s) => s.trim())
    .filter((s) => s.length > 0);
  if (entries.length === 0) throw new Error('no workers given: set --members / KV_MEMBERS, e.g. "worker-0=127.0.0.1:50052"');
  const members = entries.map((entry): Member => {
    const eq = entry.indexOf('=');
    const name = eq >= 0 ? entry.slice(0, eq) : entry;
    if (!NAME.test(name)) throw new Error(`worker name ${JSON.stringify(name)} must be a DNS label (lowercase letters, digits, '-')`);
    if (eq >= 0) return { name, address: checkAddress(name, entry.slice(eq + 1)) };
    if (!template) throw new Error(`worker ${name} has no address: write "${name}=host:port" or set --worker-address-template`);
    return { name, address: checkAddress(name, template.replaceAll('{name}', name)) };
  });
  const seen = new Set<string>();
  for (const m of members) {
    if (seen.has(m.name)) throw new Error(`worker ${m.name} is listed twice`);
    seen.add(m.name);
  }
  return members;
}

/** host:port with a port a worker can listen on: port 99999 otherwise failed every redial, for ever. */
function checkAddress(name: string, address: string): string {
  const m = /^.+:(\d+)$/.exec(address);
  if (!m) throw new Error(`worker ${name}: address ${JSON.stringify(address)} must be host:port`);
  const port = Number(m[1]);
  if (port < 1 || port > 65_535) throw new Error(`worker ${name}: port ${m[1]} in ${JSON.stringify(address)} is not 1 to 65535`);
  return address;
}
