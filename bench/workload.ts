// What a load-generator client sends: key names, values and the operation mix, shared by the preload
// (main thread) and the load threads so both agree on which keys exist.
export const WORKLOADS = ['get', 'put', 'mix', 'delete', 'listkeys', 'backup'] as const;
export type Workload = (typeof WORKLOADS)[number];

/** Fixed-width names keep every key the same size and sort in the order they were made. */
export function keyName(i: number): string {
  return `key-${i.toString().padStart(9, '0')}`;
}

/** An ASCII value of exactly `size` bytes (the contract allows 0 to 2048). */
export function makeValue(size: number, salt = 0): string {
  const alphabet = 'abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789';
  let s = '';
  for (let i = 0; i < size; i++) s += alphabet[(i * 7 + salt) % alphabet.length];
  return s;
}

/** mix: 80% Get, 20% Put — a read-mostly cache-like load (YCSB-B is 95/5, A is 50/50). */
export const MIX_PUT_SHARE = 0.2;
