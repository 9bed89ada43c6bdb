/**
 * Retry delays of the consumer runner, the one retry layer of the cloud side. A delay grows with
 * the attempt along `backoffMs` (e.g. 0.5 s, 1 s, 2 s … capped by the last entry) and is spread by
 * ±`jitterRatio` so that many consumers failing together do not come back together.
 */

/** Default delays for attempts 1, 2, 3 …: exponential, capped at one minute. */
export const DEFAULT_BACKOFF_MS = [500, 1_000, 2_000, 4_000, 8_000, 16_000, 30_000, 60_000] as const;

/**
 * Delay before attempt `attempt + 1`, in ms, after `attempt` failures (1-based; values below 1
 * count as 1). `random` is a value in [0, 1) — pass one per batch so its messages come back
 * together.
 */
export function retryDelayMs(
  backoffMs: readonly number[],
  attempt: number,
  random: number = Math.random(),
  jitterRatio = 0.2,
): number {
  if (backoffMs.length === 0) return 0;
  const index = Math.min(Math.max(1, Math.floor(attempt)), backoffMs.length) - 1;
  const base = backoffMs[index] ?? 0;
  return Math.max(0, Math.round(base * (1 - jitterRatio + 2 * jitterRatio * random)));
}
