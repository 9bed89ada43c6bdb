/**
 * The one contract every cloud output keeps. A consumer is a runner (cloud/runner.ts) plus a Sink:
 * the runner fetches, the sink writes, and only the runner acks, naks or terms.
 *
 * - `write(batch, signal)` resolves only once every message it does not list in `rejected` is
 *   durable in the store. Writing the same batch again must change nothing (replays, redeliveries).
 * - A message the store will never accept is listed in `rejected` with the reason: the runner
 *   dead-letters it (BSU_DLQ) and terms it, and acks the rest.
 * - Throwing `PermanentSinkError` means the whole batch will never be accepted (each message is
 *   dead-lettered). Throwing anything else is transient: the runner naks the batch with a growing
 *   delay and it comes back. A `TransientSinkError` may narrow that: `failedSeqs` lists the only
 *   messages that failed (the rest are durable and get acked), and `retryAfterMs` is the store's
 *   own hint (an HTTP `Retry-After`), which the nak delay never undercuts.
 */
import type { Readiness } from '../lib/ops.ts';

/** One message of the hub stream, as a sink sees it. */
export interface SinkMessage {
  /** JetStream stream sequence in `BSU`. */
  seq: number;
  subject: string;
  site: string;
  device: string;
  /** `telemetry`, `status`, `event` or `invalid`. */
  kind: string;
  /** When the hub stream stored it (ms since epoch). */
  storedAtMs: number;
  /** NATS headers the bridge added (first value of each). */
  headers: Record<string, string>;
  /** Payload bytes exactly as the device sent them. */
  payload: Uint8Array;
  /** 1 on first delivery. */
  deliveryCount: number;
}

export interface SinkRejection {
  seq: number;
  reason: string;
}

export interface WriteResult {
  /** Messages the store will never accept; all others are durable. */
  rejected: SinkRejection[];
}

export interface Sink {
  /** Short name for logs and metrics (`s3`, `redis`, `influx2`, `influx1`). */
  readonly name: string;
  /** Connects; may be called again after `close`. Throws if the store cannot be reached. */
  open(): Promise<void>;
  write(batch: readonly SinkMessage[], signal: AbortSignal): Promise<WriteResult>;
  /** Whether the store answers now; `/readyz` reports it. */
  readiness(): Promise<Readiness>;
  /** Flushes nothing new: `write` already made everything durable. Releases connections. */
  close(): Promise<void>;
}

/** The whole batch will never be accepted by this sink. */
export class PermanentSinkError extends Error {
  override name = 'PermanentSinkError';
}

export const accepted = (): WriteResult => ({ rejected: [] });

export interface TransientSinkErrorOptions {
  cause?: unknown;
  /** The store asked to be left alone this long (e.g. `Retry-After` on 429/503), in ms. */
  retryAfterMs?: number;
  /** Only these stream sequences failed; every other message of the batch is durable. */
  failedSeqs?: readonly number[];
}

/** The batch (or the part `failedSeqs` names) failed for now and will be retried. */
export class TransientSinkError extends Error {
  override name = 'TransientSinkError';
  readonly retryAfterMs: number | undefined;
  readonly failedSeqs: readonly number[] | undefined;

  constructor(message: string, options: TransientSinkErrorOptions = {}) {
    super(message, { cause: options.cause });
    this.retryAfterMs = options.retryAfterMs;
    this.failedSeqs = options.failedSeqs;
  }
}
