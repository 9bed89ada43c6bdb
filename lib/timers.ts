/**
 * Time-bound waiting, in one place: `sleep` (abortable), `waitUntil` (poll a condition until a
 * deadline) and `withTimeout` (race a promise against a deadline). Every wait that can be cut short
 * takes an AbortSignal; every timer is cleared once the wait is over, so none keeps a stopping
 * process alive.
 */

/** Resolves after `ms`, or at once when `signal` aborts. Never rejects. */
export function sleep(ms: number, signal?: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    if (signal?.aborted) return resolve();
    const timer = setTimeout(done, ms);
    function done(): void {
      clearTimeout(timer);
      signal?.removeEventListener('abort', done);
      resolve();
    }
    signal?.addEventListener('abort', done, { once: true });
  });
}

/** A condition that did not hold before its deadline. */
export class WaitTimeoutError extends Error {
  override name = 'WaitTimeoutError';
}

export interface WaitOptions {
  /** Give up after this long, in ms (default 20 s). */
  timeoutMs?: number;
  /** Poll this often, in ms (default 100). */
  everyMs?: number;
  /** Stops waiting: rejects with the signal's reason. */
  signal?: AbortSignal;
}

/**
 * Resolves with the first truthy value `check` returns, polling every `everyMs`; a `check` that
 * throws counts as not yet. Rejects with WaitTimeoutError (naming `what` and the last error) once
 * `timeoutMs` has passed.
 */
export async function waitUntil<T>(
  what: string,
  check: () => T | Promise<T>,
  options: WaitOptions = {},
): Promise<NonNullable<T>> {
  const timeoutMs = options.timeoutMs ?? 20_000;
  const end = deadline(timeoutMs);
  let last: unknown;
  for (;;) {
    if (options.signal?.aborted) throw options.signal.reason;
    try {
      const value = await check();
      if (value) return value as NonNullable<T>;
    } catch (err) {
      last = err;
    }
    if (end.expired())
      throw new WaitTimeoutError(
        `timed out after ${timeoutMs} ms waiting for ${what}${last ? `: ${describe(last)}` : ''}`,
        { cause: last },
      );
    await sleep(Math.min(options.everyMs ?? 100, Math.max(1, end.remainingMs())), options.signal);
  }
}

/** A point in time `ms` from now (monotonic clock). */
export interface Deadline {
  remainingMs(): number;
  expired(): boolean;
}

export function deadline(ms: number): Deadline {
  const at = performance.now() + ms;
  return {
    remainingMs: () => Math.max(0, at - performance.now()),
    expired: () => performance.now() >= at,
  };
}

/**
 * Settles as `promise` does, or with `onTimeout()` once `ms` has passed (its value, or its thrown
 * error). The promise itself is not cancelled: pair it with an AbortSignal where it can be.
 */
export async function withTimeout<T>(promise: Promise<T>, ms: number, onTimeout: () => T): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const timedOut = new Promise<T>((resolve, reject) => {
    timer = setTimeout(() => {
      try {
        resolve(onTimeout());
      } catch (err) {
        reject(err);
      }
    }, ms);
  });
  try {
    return await Promise.race([promise, timedOut]);
  } finally {
    clearTimeout(timer);
  }
}

const describe = (err: unknown): string => (err instanceof Error ? err.message : String(err));
