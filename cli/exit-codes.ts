// kvctl's exit codes: distinct per failure class so scripts can branch on them.
import { status } from '@grpc/grpc-js';

export const EXIT = {
  OK: 0,
  /** Anything else: INTERNAL, an unexpected status, a failed backup. */
  FAILED: 1,
  /** Bad input: a usage error or INVALID_ARGUMENT. */
  BAD_INPUT: 2,
  NOT_FOUND: 3,
  /** The store could not be reached or did not answer in time (UNAVAILABLE, DEADLINE_EXCEEDED). */
  UNREACHABLE: 4,
  /** The store refused for load or space (RESOURCE_EXHAUSTED). */
  BUSY: 5,
  /** Not allowed: a missing or wrong admin token, or admin calls disabled (UNAUTHENTICATED, PERMISSION_DENIED). */
  DENIED: 6,
} as const;

export function exitCodeFor(code: number): number {
  switch (code) {
    case status.OK:
      return EXIT.OK;
    case status.INVALID_ARGUMENT:
    case status.OUT_OF_RANGE:
      return EXIT.BAD_INPUT;
    case status.NOT_FOUND:
      return EXIT.NOT_FOUND;
    case status.UNAVAILABLE:
    case status.DEADLINE_EXCEEDED:
      return EXIT.UNREACHABLE;
    case status.RESOURCE_EXHAUSTED:
      return EXIT.BUSY;
    case status.UNAUTHENTICATED:
    case status.PERMISSION_DENIED:
      return EXIT.DENIED;
    default:
      return EXIT.FAILED;
  }
}
