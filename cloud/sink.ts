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
 *   delay and it comes back.
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
