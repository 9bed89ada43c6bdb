/**
 * Reading a time-series engine back: what `migrate verify` and `audit` compare. One interface for
 * every engine ingest writes to, so that a new engine (a Flux reader for InfluxDB 2, say) is one
 * more file beside influxql.ts and victoria-metrics.ts, and the comparison (cloud/ingest/verify.ts)
 * never knows which engine it reads.
 *
 * Every figure is per hour in UTC, over a half-open window [sinceMs, untilMs) of device time (the
 * points' timestamps, docs/ingest.md). Readers make one attempt per call: no retries of their own,
 * the caller decides what a failure means. A failed request is an EngineReadError carrying the HTTP
 * status and the server's words.
 */
import { Measurement, Tag } from '../line-protocol.ts';

/** Length of one bucket of every reader's figures, ms. */
export const HOUR_MS = 3_600_000;

/** Statistics of one numeric field over the points of one row that carry it. */
export interface FieldStats {
  /** Points that carry the field. */
  count: number;
  min: number;
  max: number;
  sum: number;
}

/** One device's figures for one hour of one measurement. */
export interface HourlyStats {
  site: string;
  device: string;
  /** The hour in UTC, `YYYY-MM-DDTHH`. */
  hour: string;
  /**
   * Points (one per series and timestamp) of the measurement for this device and hour, counted as
   * the points carrying the count field (`countField`, see pointCountField).
   */
  count: number;
  /** Each asked-for field that at least one point of the row carries; absent when none does. */
  fields: Record<string, FieldStats>;
}

/** One site's point count for one hour (the completeness audit). */
export interface SiteHourCount {
  site: string;
  /** The hour in UTC, `YYYY-MM-DDTHH`. */
  hour: string;
  count: number;
}

/** The window and the series a query covers. */
export interface WindowQuery {
  /** Start of the window, ms since the epoch, inclusive. */
  sinceMs: number;
  /** End of the window, ms since the epoch, exclusive. */
  untilMs: number;
  /** Only this site (tag `site`). */
  site?: string;
  /** Only this device (tag `device`). */
  device?: string;
  /** Measurement, e.g. `telemetry` (line-protocol.ts `Measurement`). */
  measurement: string;
  /**
   * The field whose values count the points: one every point of the measurement carries. Defaults
   * to pointCountField(measurement); required for measurements without such a field.
   */
  countField?: string;
  /** Cancels the request (Ctrl-C); the reader's own timeout applies as well. */
  signal?: AbortSignal;
}

export interface HourlyStatsQuery extends WindowQuery {
  /** Numeric fields to aggregate (min, max, sum and how many points carry each). */
  fields: readonly string[];
}

export interface FieldListQuery {
  measurement: string;
  /**
   * Window the fields should have values in. Engines that list fields without time (InfluxQL)
   * ignore it and return every field the measurement ever had.
   */
  sinceMs: number;
  untilMs: number;
  signal?: AbortSignal;
}

/** How an engine stores a field's values. */
export const FieldType = {
  number: 'number',
  string: 'string',
  boolean: 'boolean',
} as const;
export type FieldType = (typeof FieldType)[keyof typeof FieldType];

export interface FieldInfo {
  name: string;
  /**
   * What the engine stores. VictoriaMetrics stores every field as a number (text arrives there as
   * 0), so only an engine that keeps types (InfluxDB) ever reports `string`.
   */
  type: FieldType;
}

/** Reads one engine back. Implementations: influxql.ts, victoria-metrics.ts; factory in index.ts. */
export interface EngineReader {
  /** The engine as `ingest --sink` names it: `influx1`, `influx2`. */
  readonly engine: string;
  /** What it reads, for reports and errors (`http://host:8086 db=switchyard`); never secrets. */
  readonly target: string;
  /**
   * Per site, device and hour (UTC) of the window: the point count and min/max/sum of each field.
   * Rows are sorted by site, device and hour; hours without any point are left out.
   */
  hourlyStats(query: HourlyStatsQuery): Promise<HourlyStats[]>;
  /** Per site and hour (UTC) of the window: the point count. Sorted by site and hour; no empty rows. */
  countPoints(query: WindowQuery): Promise<SiteHourCount[]>;
  /** The fields of a measurement, sorted by name. */
  listFields(query: FieldListQuery): Promise<FieldInfo[]>;
  /** Releases connections. */
  close(): Promise<void>;
}

// ---------------------------------------------------------------------------------------------
// What every reader shares

/**
 * Tag keys, besides `site` and `device`, that the points of each measurement carry
 * (cloud/ingest/line-protocol.ts). An engine that flattens measurement and field into one name
 * (VictoriaMetrics: `telemetry_string_SoC`) tells `telemetry` field `string_SoC` from
 * `telemetry_string` field `SoC` by them.
 */
export const MEASUREMENT_TAGS: Readonly<Record<string, readonly string[]>> = {
  [Measurement.telemetry]: [],
  [Measurement.telemetryString]: [Tag.string],
  [Measurement.telemetryModule]: [Tag.string, Tag.module],
  [Measurement.status]: [],
  [Measurement.event]: [Tag.alarm, Tag.severity],
};

/** Every tag key ingest writes besides `site` and `device`. */
export const EXTRA_TAGS: readonly string[] = [Tag.string, Tag.module, Tag.alarm, Tag.severity];

/**
 * `seq` for `telemetry`, `status` and `event`: the schemas require it in every payload
 * (schemas/telemetry.ts, status.ts, event.ts) and the mapping writes it into that payload's point,
 * so counting it counts the points. String and module rows carry no field every row has: a query
 * on them names its `countField`.
 */
const COUNT_FIELDS: Readonly<Record<string, string>> = {
  [Measurement.telemetry]: 'seq',
  [Measurement.status]: 'seq',
  [Measurement.event]: 'seq',
};

/** The field that counts the points of `measurement`; RangeError for one without such a field. */
export function pointCountField(measurement: string): string {
  const field = COUNT_FIELDS[measurement];
  if (field === undefined)
    throw new RangeError(`measurement ${measurement} has no field every point carries: name a countField`);
  return field;
}

/** The query's count field, or the measurement's default. */
export const countFieldOf = (query: WindowQuery): string =>
  query.countField ?? pointCountField(query.measurement);

/** Throws RangeError unless the window is two integers, since < until. */
export function checkWindow(query: { sinceMs: number; untilMs: number }): void {
  const { sinceMs, untilMs } = query;
  if (!Number.isSafeInteger(sinceMs) || !Number.isSafeInteger(untilMs) || sinceMs >= untilMs)
    throw new RangeError(`bad window [${sinceMs}, ${untilMs}): two integers in ms, since before until`);
}

/** Start of the hour (UTC) holding `ms`. */
export const hourStartMs = (ms: number): number => Math.floor(ms / HOUR_MS) * HOUR_MS;

/** `YYYY-MM-DDTHH` of the hour (UTC) holding `ms`. */
export const hourOf = (ms: number): string => new Date(hourStartMs(ms)).toISOString().slice(0, 13);

const byText = (a: string, b: string): number => (a < b ? -1 : a > b ? 1 : 0);

/** Sort order of every reader's rows: site, device, hour. */
export const compareRows = (
  a: { site: string; device?: string; hour: string },
  b: { site: string; device?: string; hour: string },
): number => byText(a.site, b.site) || byText(a.device ?? '', b.device ?? '') || byText(a.hour, b.hour);

// ---------------------------------------------------------------------------------------------
// HTTP

/** A read request failed: the server answered an error, or could not be reached in time. */
export class EngineReadError extends Error {
  override name = 'EngineReadError';
  constructor(
    message: string,
    /** HTTP status, when the server answered (InfluxQL reports query errors with 200). */
    readonly status?: number,
    options?: ErrorOptions,
  ) {
    super(message, options);
  }
}

/** Longest server answer quoted in an error, characters. */
const MAX_QUOTED = 500;
const quote = (text: string): string => {
  const t = text.trim();
  return t.length > MAX_QUOTED ? `${t.slice(0, MAX_QUOTED)}…` : t || '(empty response)';
};

/**
 * One HTTP request of a reader, body included, within `timeoutMs` and the caller's `signal`: once
 * the server answered 2xx, `consume` reads the response (streaming it, under the same timeout).
 * Throws EngineReadError for an error status (with the body), a timeout or a failed connection,
 * and whatever EngineReadError `consume` throws; the caller's own abort rethrows its reason.
 */
export async function readerRequest<T>(
  what: string,
  url: string,
  init: RequestInit & { timeoutMs: number; signal?: AbortSignal | undefined },
  consume: (res: Response) => Promise<T>,
): Promise<T> {
  const { timeoutMs, signal, ...rest } = init;
  const timeout = AbortSignal.timeout(timeoutMs);
  try {
    const res = await fetch(url, { ...rest, signal: signal ? AbortSignal.any([signal, timeout]) : timeout });
    if (!res.ok)
      throw new EngineReadError(`${what}: HTTP ${res.status}: ${quote(await res.text())}`, res.status);
    return await consume(res);
  } catch (err) {
    if (err instanceof EngineReadError) throw err;
    if (signal?.aborted) throw signal.reason;
    if (timeout.aborted)
      throw new EngineReadError(`${what}: no answer within ${timeoutMs} ms`, undefined, { cause: err });
    // fetch's own message is "fetch failed"; what failed (ECONNREFUSED …) is its cause.
    const reason =
      err instanceof Error ? (err.cause instanceof Error ? err.cause.message : err.message) : String(err);
    throw new EngineReadError(`${what}: ${reason}`, undefined, { cause: err });
  }
}

/**
 * The lines of a response body, decoded as UTF-8, as they arrive, so a large export is never held
 * whole. Empty lines are skipped. Works on bytes: a line (one exported series can be megabytes) is
 * decoded once, when its newline arrives, not searched again with every chunk.
 */
export async function* bodyLines(res: Response): AsyncGenerator<string> {
  if (!res.body) return;
  const decoder = new TextDecoder();
  let pending: Buffer[] = [];
  for await (const part of res.body) {
    const chunk = Buffer.from(part as Uint8Array);
    let start = 0;
    for (let end = chunk.indexOf(0x0a); end >= 0; end = chunk.indexOf(0x0a, start)) {
      const piece = chunk.subarray(start, end);
      const line = pending.length === 0 ? piece : Buffer.concat([...pending, piece]);
      pending = [];
      if (line.length > 0) yield decoder.decode(line);
      start = end + 1;
    }
    if (start < chunk.length) pending.push(chunk.subarray(start));
  }
  const last = decoder.decode(Buffer.concat(pending));
  if (last.trim() !== '') yield last;
}
