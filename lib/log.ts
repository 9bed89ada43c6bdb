/** JSON-lines logging for every service (pino), one child logger per component. */
import pino, { type Logger } from 'pino';

export type { Logger };

export interface LogOptions {
  level?: string;
  /** Where to write: a file descriptor (default 1, stdout). */
  fd?: number;
}

/** The root logger of a process; `service` is stamped on every line. */
export function createLogger(service: string, options: LogOptions = {}): Logger {
  return pino(
    {
      level: options.level ?? 'info',
      base: { service, pid: process.pid },
      timestamp: pino.stdTimeFunctions.isoTime,
      formatters: { level: (label) => ({ level: label }) },
    },
    pino.destination({ fd: options.fd ?? 1, sync: false }),
  );
}

/** A logger that writes nothing, for library use and tests. */
export const silentLogger: Logger = pino({ level: 'silent' });
