/**
 * Reading an engine back through InfluxQL over `/query` (`POST q=…`, `epoch=ms`): InfluxDB 1.x
 * (tested against 1.6.7), and InfluxDB 3 through its v1 query API.
 *
 * Aggregation is the server's: one `SELECT count(…), min(…), max(…), sum(…) … GROUP BY time(1h),
 * "site", "device" fill(none)` per call, so a day of a large fleet comes back as one row per device
 * and hour. InfluxQL's buckets are aligned to the epoch, i.e. to UTC hours. The answer is read as
 * `chunked=true` JSON lines, so a long answer is never cut short by the server's row limit; a
 * server that does not chunk sends one JSON object, which reads the same.
 */
import {
  checkWindow,
  compareRows,
  countFieldOf,
  EngineReadError,
  FieldType,
  hourOf,
  readerRequest,
  bodyLines,
  type EngineReader,
  type FieldInfo,
  type FieldListQuery,
  type FieldStats,
  type HourlyStats,
  type HourlyStatsQuery,
  type SiteHourCount,
  type WindowQuery,
} from './reader.ts';

export interface InfluxQLSettings {
  /** The engine as `ingest --sink` names it: `influx1`, or `influx2` for InfluxDB 3. */
  engine: string;
  /** Base URL, e.g. `http://127.0.0.1:8086`. */
  url: string;
  /** Database (InfluxDB 3: the bucket). */
  database: string;
  /** Retention policy; the database's default when omitted. */
  retentionPolicy?: string;
  /** Basic auth (InfluxDB 1.x users). */
  username?: string;
  password?: string;
  /** API token (InfluxDB 3), sent as `Authorization: Token …` when no username is set. */
  token?: string;
  /** Timeout of one query, answer included, ms. */
  requestTimeoutMs: number;
}

/** An InfluxQL identifier, double-quoted. */
export const quoteIdent = (name: string): string => `"${name.replace(/\\/g, '\\\\').replace(/"/g, '\\"')}"`;

/** An InfluxQL string literal, single-quoted. */
export const quoteLiteral = (value: string): string =>
  `'${value.replace(/\\/g, '\\\\').replace(/'/g, "\\'")}'`;

/** One series of an InfluxQL answer. */
interface Series {
  name: string;
  tags?: Record<string, string>;
  columns: string[];
  values: unknown[][];
}

interface Answer {
  error?: string;
  results?: { statement_id?: number; error?: string; series?: Series[] }[];
}

/** Field types InfluxQL reports (`SHOW FIELD KEYS`), as FieldType. */
const FIELD_TYPES: Readonly<Record<string, FieldType>> = {
  float: FieldType.number,
  integer: FieldType.number,
  unsigned: FieldType.number,
  string: FieldType.string,
  boolean: FieldType.boolean,
};

const num = (v: unknown): number => (typeof v === 'number' ? v : 0);

export class InfluxQLReader implements EngineReader {
  readonly engine: string;
  readonly target: string;
  private readonly queryUrl: string;
  private readonly headers: Record<string, string> = {};

  constructor(private readonly settings: InfluxQLSettings) {
    const base = settings.url.replace(/\/+$/, '');
    this.engine = settings.engine;
    this.target = `${base} db=${settings.database}`;
    this.queryUrl = `${base}/query?${new URLSearchParams({ db: settings.database, epoch: 'ms', chunked: 'true' })}`;
    if (settings.username) {
      const credentials = `${settings.username}:${settings.password ?? ''}`;
      this.headers.authorization = `Basic ${Buffer.from(credentials).toString('base64')}`;
    } else if (settings.token) {
      this.headers.authorization = `Token ${settings.token}`;
    }
  }

  /**
   * One row per site, device and hour. The point count is `count(<countField>)`; each field's
   * count, min, max and sum come from the same statement. A field that is text in InfluxDB makes
   * the server refuse the query (min/max/sum of text): ask for numeric fields only (listFields).
   */
  async hourlyStats(query: HourlyStatsQuery): Promise<HourlyStats[]> {
    checkWindow(query);
    const fields = [...new Set(query.fields)];
    const selects = [`count(${quoteIdent(countFieldOf(query))}) AS "n"`];
    fields.forEach((field, i) => {
      const f = quoteIdent(field);
      selects.push(`count(${f}) AS "c${i}"`, `min(${f}) AS "lo${i}"`, `max(${f}) AS "hi${i}"`);
      selects.push(`sum(${f}) AS "s${i}"`);
    });
    const statement =
      `SELECT ${selects.join(', ')} FROM ${this.from(query.measurement)} WHERE ${this.where(query)} ` +
      `GROUP BY time(1h), "site", "device" fill(none)`;
    const rows: HourlyStats[] = [];
    await this.select(statement, query.signal, (series, at) => {
      const site = series.tags?.site ?? '';
      const device = series.tags?.device ?? '';
      for (const values of series.values) {
        const stats: Record<string, FieldStats> = {};
        fields.forEach((field, i) => {
          const count = num(values[at(`c${i}`)]);
          if (count > 0)
            stats[field] = {
              count,
              min: num(values[at(`lo${i}`)]),
              max: num(values[at(`hi${i}`)]),
              sum: num(values[at(`s${i}`)]),
            };
        });
        const count = num(values[at('n')]);
        if (count === 0 && Object.keys(stats).length === 0) continue;
        rows.push({ site, device, hour: hourOf(num(values[at('time')])), count, fields: stats });
      }
    });
    return rows.sort(compareRows);
  }

  /** `count(<countField>)` per site and hour. */
  async countPoints(query: WindowQuery): Promise<SiteHourCount[]> {
    checkWindow(query);
    const statement =
      `SELECT count(${quoteIdent(countFieldOf(query))}) AS "n" FROM ${this.from(query.measurement)} ` +
      `WHERE ${this.where(query)} GROUP BY time(1h), "site" fill(none)`;
    const rows: SiteHourCount[] = [];
    await this.select(statement, query.signal, (series, at) => {
      for (const values of series.values) {
        const count = num(values[at('n')]);
        if (count > 0)
          rows.push({ site: series.tags?.site ?? '', hour: hourOf(num(values[at('time')])), count });
      }
    });
    return rows.sort(compareRows);
  }

  /**
   * `SHOW FIELD KEYS`: every field the measurement ever had, whatever the window. A field stored
   * with different types in different shards is reported as its non-numeric type.
   */
  async listFields(query: FieldListQuery): Promise<FieldInfo[]> {
    const types = new Map<string, FieldType>();
    await this.select(`SHOW FIELD KEYS FROM ${this.from(query.measurement)}`, query.signal, (series, at) => {
      for (const values of series.values) {
        const name = String(values[at('fieldKey')]);
        const type = FIELD_TYPES[String(values[at('fieldType')])] ?? FieldType.string;
        if (types.get(name) === undefined || type !== FieldType.number) types.set(name, type);
      }
    });
    return [...types].map(([name, type]) => ({ name, type })).sort((a, b) => (a.name < b.name ? -1 : 1));
  }

  async close(): Promise<void> {
    // fetch's connections belong to the process-wide pool and close themselves when idle.
  }

  private from(measurement: string): string {
    const { database, retentionPolicy } = this.settings;
    return retentionPolicy
      ? `${quoteIdent(database)}.${quoteIdent(retentionPolicy)}.${quoteIdent(measurement)}`
      : quoteIdent(measurement);
  }

  private where(query: WindowQuery): string {
    // An integer with a unit is an absolute time in InfluxQL: ms since the epoch.
    const parts = [`time >= ${query.sinceMs}ms`, `time < ${query.untilMs}ms`];
    if (query.site !== undefined) parts.push(`"site" = ${quoteLiteral(query.site)}`);
    if (query.device !== undefined) parts.push(`"device" = ${quoteLiteral(query.device)}`);
    return parts.join(' AND ');
  }

  /**
   * Runs one statement and hands each series of its answer to `onSeries`, with a lookup of column
   * positions by name. A series the server split over several chunks arrives as several series.
   * Throws EngineReadError for an HTTP error or an error in the answer (InfluxQL reports a missing
   * database or a bad query with status 200 and `error`).
   */
  private async select(
    statement: string,
    signal: AbortSignal | undefined,
    onSeries: (series: Series, at: (column: string) => number) => void,
  ): Promise<void> {
    const what = `${this.engine} query at ${this.target}`;
    await readerRequest(
      what,
      this.queryUrl,
      {
        method: 'POST',
        headers: this.headers,
        body: new URLSearchParams({ q: statement }),
        timeoutMs: this.settings.requestTimeoutMs,
        signal,
      },
      async (res) => {
        for await (const line of bodyLines(res)) {
          let answer: Answer;
          try {
            answer = JSON.parse(line) as Answer;
          } catch (err) {
            throw new EngineReadError(`${what}: answer is not JSON: ${line.slice(0, 200)}`, res.status, {
              cause: err,
            });
          }
          if (answer.error) throw new EngineReadError(`${what}: ${answer.error}`, res.status);
          for (const result of answer.results ?? []) {
            if (result.error) throw new EngineReadError(`${what}: ${result.error}`, res.status);
            for (const series of result.series ?? []) {
              const index = new Map(series.columns.map((c, i) => [c, i]));
              onSeries(series, (column) => {
                const i = index.get(column);
                if (i === undefined)
                  throw new EngineReadError(`${what}: answer has no column ${column}`, res.status);
                return i;
              });
            }
          }
        }
      },
    );
  }
}
