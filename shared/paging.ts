// ListKeysPage limits, shared by the gateway and a worker serving the public API directly. A page of
// 10,000 keys of at most 128 bytes is ~1.3 MB: far below the client's receive limit, and small enough
// that one page never holds a worker's event loop for long.
export const DEFAULT_PAGE_KEYS = 1000;
export const MAX_PAGE_KEYS = 10_000;

/** 0 (unset) means the default; more than the maximum is clamped, not refused, so clients can ask big. */
export function pageLimit(requested: number | undefined): number {
  if (!requested) return DEFAULT_PAGE_KEYS;
  return Math.min(requested, MAX_PAGE_KEYS);
}
