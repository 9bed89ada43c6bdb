/**
 * What a service's start-up shares with the clients it opens: its logger and its stop signal. A
 * client that waits for a server at start (lib/nats.ts) reads it when its caller passes none, so
 * that every long-running command says what it waits for and stops waiting on SIGTERM.
 */
import { AsyncLocalStorage } from 'node:async_hooks';
import { describeError } from './errors.ts';
import type { Logger } from './log.ts';

export interface StartContext {
  log: Logger;
  signal: AbortSignal;
}

const storage = new AsyncLocalStorage<StartContext>();

/** Starts running in a context now. */
let running = 0;

/**
 * Runs `fn` (a service's start) with `context` visible to startContext() in everything it calls.
 * Once no start is running any more, the storage is disabled: while an AsyncLocalStorage is
 * enabled, Node 20 runs async hooks on every promise the process makes, which a running service
 * would pay on every message it handles.
 */
export async function runInStartContext<T>(context: StartContext, fn: () => Promise<T>): Promise<T> {
  running++;
  try {
    return await storage.run(context, fn);
  } finally {
    if (--running === 0) storage.disable();
  }
}

/** The context of the start-up this code runs in, if any. */
export const startContext = (): StartContext | undefined => storage.getStore();

/** How often a wait for an unreachable server repeats that it is still waiting. */
export const UNREACHABLE_LOG_EVERY_MS = 15_000;

/**
 * Reports failed attempts to reach `what` (e.g. `NATS at nats://…`): the first at once, then one
 * line every `everyMs` with the attempt count, so a waiting service is neither silent nor noisy.
 */
export function unreachableReporter(
  log: Logger | undefined,
  what: string,
  everyMs: number = UNREACHABLE_LOG_EVERY_MS,
): (attempt: number, err: unknown) => void {
  let lastAtMs = -Infinity;
  return (attempt, err) => {
    const now = performance.now();
    if (now - lastAtMs < everyMs) return;
    lastAtMs = now;
    log?.warn({ attempt, err: describeError(err) }, `cannot reach ${what}: ${describeError(err)}; retrying`);
  };
}

/**
 * Resolves with what `promise` gives, or undefined as soon as `signal` aborts (the promise is left
 * to settle on its own); rejects as it does. For waits on clients that take no signal.
 */
export function untilAborted<T>(promise: Promise<T>, signal: AbortSignal): Promise<T | undefined> {
  if (signal.aborted) {
    promise.catch(() => undefined);
    return Promise.resolve(undefined);
  }
  return new Promise<T | undefined>((resolve, reject) => {
    const onAbort = (): void => {
      promise.catch(() => undefined);
      resolve(undefined);
    };
    signal.addEventListener('abort', onAbort, { once: true });
    promise.then(
      (value) => {
        signal.removeEventListener('abort', onAbort);
        resolve(value);
      },
      (err: unknown) => {
        signal.removeEventListener('abort', onAbort);
        reject(err);
      },
    );
  });
}
