/**
 * Clean stops. A service runs until the signal returned here aborts (SIGTERM or SIGINT), then
 * settles the work in hand and returns; a second signal exits at once.
 */
import type { Logger } from './log.ts';

export function shutdownSignal(log: Logger): AbortSignal {
  const controller = new AbortController();
  const onSignal = (signal: NodeJS.Signals): void => {
    if (controller.signal.aborted) {
      log.warn({ signal }, 'second signal: exiting now');
      process.exit(1);
    }
    log.info({ signal }, 'stopping: settling the work in hand');
    controller.abort(new Error(`received ${signal}`));
  };
  process.on('SIGTERM', onSignal);
  process.on('SIGINT', onSignal);
  return controller.signal;
}
