/**
 * How the ingest sinks read a failed write, the same for every engine (InfluxDB v2/v3 API,
 * VictoriaMetrics, InfluxDB 1.x):
 *
 * - `data`: the server refused some of the points for good (400 unparsable, partial write, field
 *   type conflict; 422 outside retention). The sink splits the batch to find the messages behind
 *   them and rejects those with the server's reason; the rest is written.
 * - `tooLarge`: 413. The sink splits the batch; a single message that is still too large is
 *   rejected.
 * - `config`: 401, 403, 404 (wrong token, missing database or bucket) and any other 4xx. An
 *   operator problem, not bad data: transient, so nothing is dead-lettered while it lasts, and
 *   logged as an error with what to check.
 * - `unavailable`: 429, 5xx, timeouts, refused or reset connections. Transient; a `Retry-After`
 *   the server sent with its answer (429, 503) is the least the runner waits before retrying.
 */
import { TransientSinkError } from '../sink.ts';

export const FailureClass = {
  data: 'data',
  tooLarge: 'tooLarge',
  config: 'config',
  unavailable: 'unavailable',
} as const;
export type FailureClass = (typeof FailureClass)[keyof typeof FailureClass];

/** Class of an HTTP status the write endpoint answered with (not 2xx). */
export function classifyStatus(status: number): FailureClass {
  if (status === 400 || status === 422) return FailureClass.data;
  if (status === 413) return FailureClass.tooLarge;
  if (status === 429 || status >= 500) return FailureClass.unavailable;
  return FailureClass.config;
}

/** The write endpoint answered with an HTTP error status. */
export class InfluxHttpError extends Error {
  override name = 'InfluxHttpError';
  readonly failureClass: FailureClass;
  /** The server's `Retry-After`, in ms (lib/retry-after.ts), if it sent one. */
  readonly retryAfterMs: number | undefined;
  constructor(
    /** HTTP status. */
    readonly status: number,
    /** The server's own words (the `error` or `message` of a JSON body, else the body). */
    readonly serverReason: string,
    options: ErrorOptions & { retryAfterMs?: number | undefined } = {},
  ) {
    super(`HTTP ${status}: ${serverReason}`, { cause: options.cause });
    this.failureClass = classifyStatus(status);
    this.retryAfterMs = options.retryAfterMs;
  }
}

/**
 * The store cannot take writes now (server down or overloaded, timeout, network error, or a
 * configuration problem such as a missing database): transient, the runner naks and retries, no
 * sooner than `retryAfterMs` when the server said when.
 */
export class InfluxUnavailableError extends TransientSinkError {
  override name = 'InfluxUnavailableError';
}

/** The failure class of anything a write threw: HTTP errors by status, everything else transient. */
export const failureClassOf = (err: unknown): FailureClass =>
  err instanceof InfluxHttpError ? err.failureClass : FailureClass.unavailable;

/** The reason in an error response body: `{"error": …}` (1.x), `{"message": …}` (2.x/3.x), or the text. */
export function serverReason(body: string | undefined): string {
  const text = (body ?? '').trim();
  try {
    const json = JSON.parse(text) as { error?: unknown; message?: unknown };
    if (typeof json.error === 'string') return json.error;
    if (typeof json.message === 'string') return json.message;
  } catch {
    // not JSON: the text itself is the reason
  }
  return text.length > 500 ? `${text.slice(0, 500)}…` : text || '(empty response)';
}
