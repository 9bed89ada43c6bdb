/**
 * The life of a long-running command: JSON logs, a metrics registry, the ops endpoint
 * (/metrics, /healthz, /readyz), start, run until SIGTERM/SIGINT, stop cleanly, exit.
 *
 * Whatever handles a service leaves open, the process ends: a start that fails logs one line and
 * exits non-zero; a stop signal during start calls the start off and exits 0; a stop that outlasts
 * its grace exits anyway. Nothing relies on the event loop draining.
 */
import type { Registry } from 'prom-client';
import { describeError, ExitCode, UsageError } from './errors.ts';
import { createLogger, type Logger } from './log.ts';
import { createRegistry, startOpsServer, type OpsServer, type Readiness } from './ops.ts';
import { shutdownSignal } from './shutdown.ts';
import { runInStartContext, untilAborted } from './start-context.ts';
import { withTimeout } from './timers.ts';

/** What a running service offers the ops endpoint and the shutdown. */
export interface RunningService {
  readiness(): Readiness | Promise<Readiness>;
  /** Settles the work in hand and releases connections (called once the stop signal came). */
  stop(): Promise<void>;
  /** Settles if the service ends by itself; a rejection ends the process with its error. */
  done?: Promise<void>;
}

export interface ServiceOptions {
  /** `switchyard-<name>` in logs and metrics. */
  name: string;
  opsHost: string;
  opsPort: number;
  logLevel: string;
  /** How long `stop()` may take before the process exits anyway (default SERVICE_STOP_GRACE_MS). */
  stopGraceMs?: number;
  /**
   * Opens the service's connections. `signal` aborts on SIGTERM/SIGINT: a wait for a server ends
   * then (lib/nats.ts reads it from the start context by itself).
   */
  start(context: { log: Logger; registry: Registry; signal: AbortSignal }): Promise<RunningService>;
}

/** Default bound on a service's stop (ms): below systemd's and Kubernetes' own stop timeouts. */
export const SERVICE_STOP_GRACE_MS = 15_000;
/** Bound on the last steps (closing the ops endpoint, flushing the log), in ms. */
const FINAL_STEP_MS = 2_000;

/**
 * Runs a service until a stop signal, then ends the process: exit 0 after a clean stop (or a stop
 * signal during start), 1 when the start or the service failed or the stop outlasted its grace.
 * A bad setting (UsageError) is thrown for the command line to report (exit 2).
 */
export async function runService(options: ServiceOptions): Promise<void> {
  const log = createLogger(options.name, { level: options.logLevel });
  const registry = createRegistry(options.name);
  const signal = shutdownSignal(log);
  const stopGraceMs = options.stopGraceMs ?? SERVICE_STOP_GRACE_MS;
  let service: RunningService | undefined;
  let ops: OpsServer | undefined;
  let code: number = ExitCode.ok;
  let usageError: UsageError | undefined;
  try {
    ops = await startOpsServer({
      host: options.opsHost,
      port: options.opsPort,
      registry,
      log,
      readiness: () => service?.readiness() ?? { ready: false, reasons: ['starting'] },
    });
    const starting = runInStartContext({ log, signal }, () => options.start({ log, registry, signal }));
    service = await untilAborted(starting, signal);
    if (!service) {
      // A start that completes after all is released in the background; the exit does not wait.
      void starting.then((late) => late.stop()).catch(() => undefined);
      log.info('stopped while starting');
    } else {
      log.info('started');
      await untilAborted(service.done ?? new Promise<void>(() => undefined), signal);
      code = await stopWithin(service, stopGraceMs, log);
    }
  } catch (err) {
    if (signal.aborted && !service) {
      // The start gave up because of the stop signal: a clean stop, not a failure.
      log.info('stopped while starting');
    } else if (err instanceof UsageError) {
      usageError = err;
      code = ExitCode.usage;
    } else {
      code = ExitCode.failure;
      log.error({ err: describeError(err) }, `${service ? 'failed' : 'cannot start'}: ${describeError(err)}`);
      // Released within the grace, quietly: the line above says what went wrong.
      if (service)
        await withTimeout(
          service.stop().catch(() => undefined),
          stopGraceMs,
          () => undefined,
        );
    }
  }
  await withTimeout(ops?.close() ?? Promise.resolve(), FINAL_STEP_MS, () => undefined);
  await withTimeout(
    new Promise<void>((resolve) => log.flush(() => resolve())),
    FINAL_STEP_MS,
    () => undefined,
  );
  if (usageError) {
    // The command line prints it on one line and sets exit code 2; this ends a process it left busy.
    setTimeout(() => process.exit(ExitCode.usage), FINAL_STEP_MS).unref();
    throw usageError;
  }
  process.exit(code);
}

/** Stops `service` within `graceMs`; the exit code that follows. */
async function stopWithin(service: RunningService, graceMs: number, log: Logger): Promise<number> {
  try {
    const stopped = await withTimeout(
      service.stop().then(() => true),
      graceMs,
      () => false,
    );
    if (stopped) {
      log.info('stopped cleanly');
      return ExitCode.ok;
    }
    log.warn({ graceMs }, `stop did not finish within ${graceMs} ms: exiting anyway`);
  } catch (err) {
    log.error({ err: describeError(err) }, `stop failed: ${describeError(err)}`);
  }
  return ExitCode.failure;
}
