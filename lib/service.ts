/**
 * The life of a long-running command: JSON logs, a metrics registry, the ops endpoint
 * (/metrics, /healthz, /readyz), start, run until SIGTERM/SIGINT, stop cleanly, exit 0.
 */
import type { Registry } from 'prom-client';
import { createLogger, type Logger } from './log.ts';
import { createRegistry, startOpsServer, type Readiness } from './ops.ts';
import { shutdownSignal } from './shutdown.ts';

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
  start(context: { log: Logger; registry: Registry; signal: AbortSignal }): Promise<RunningService>;
}

/** Runs a service until a stop signal; resolves once it has stopped. */
export async function runService(options: ServiceOptions): Promise<void> {
  const log = createLogger(options.name, { level: options.logLevel });
  const registry = createRegistry(options.name);
  const signal = shutdownSignal(log);
  let service: RunningService | undefined;
  const ops = await startOpsServer({
    host: options.opsHost,
    port: options.opsPort,
    registry,
    log,
    readiness: () => service?.readiness() ?? { ready: false, reasons: ['starting'] },
  });
  try {
    service = await options.start({ log, registry, signal });
    log.info('started');
    if (!signal.aborted)
      await new Promise((resolve) => signal.addEventListener('abort', resolve, { once: true }));
    await service.stop();
    log.info('stopped cleanly');
  } finally {
    await ops.close();
    log.flush();
  }
}
