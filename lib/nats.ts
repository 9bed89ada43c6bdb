/** NATS connections with the settings every Switchyard process shares. */
import { connect, type NatsConnection } from '@nats-io/transport-node';

export interface NatsOptions {
  /** One or more server URLs, comma-separated. */
  url: string;
  /** Connection name shown in the server's monitor (`/connz`). */
  name: string;
  /** Give up the first connection after this long (ms); reconnects after that are unbounded. */
  connectTimeoutMs?: number;
  /**
   * Services (true) keep trying to make the first connection, so they outlive a server that starts
   * after them; one-shot commands (false) fail at once with a clear error.
   */
  waitForServer?: boolean;
}

/**
 * Connects and keeps reconnecting forever: a service outlives any outage of its server, and reports
 * the outage through `/readyz` rather than by exiting.
 */
export function connectNats(options: NatsOptions): Promise<NatsConnection> {
  return connect({
    servers: options.url.split(',').map((s) => s.trim()),
    name: options.name,
    timeout: options.connectTimeoutMs ?? 10_000,
    maxReconnectAttempts: -1,
    reconnectTimeWait: 500,
    waitOnFirstConnect: options.waitForServer ?? true,
    pingInterval: 10_000,
  });
}

/** JetStream's "stream not found" (API error 10059), across client versions and error shapes. */
export function isStreamNotFound(err: unknown): boolean {
  const e = err as { code?: unknown; api_error?: { err_code?: number }; message?: string } | undefined;
  return (
    e?.api_error?.err_code === 10059 ||
    e?.code === 10059 ||
    e?.code === '404' ||
    /stream not found/i.test(e?.message ?? '')
  );
}
