/**
 * Reading VictoriaMetrics back (the `influx2` engine here): the raw samples of the window through
 * `/api/v1/export` (JSON lines, one series per line), aggregated per device and hour in this
 * process.
 *
 * Export rather than PromQL (`count_over_time(…[1h])` at step 1h): a range function looks back over
 * (t-1h, t], so exact UTC hours need evaluation times one ms before each hour ends and no rounding
 * of start and step by the server's cache, while the raw samples are exact by construction and the
 * buckets are ours. Export returns each series merged and de-duplicated (`-dedup.minScrapeInterval`),
 * as a query would see it. The cost is the transfer: every sample of the asked-for fields crosses the
 * wire (about 19 bytes each), streamed and never held whole. Measured here: a day of 10 devices at
 * one reading a second, 3 fields (2.6 M samples, 50 MB), in 3.8 s, 1.5 s of it this process's CPU.
 *
 * VictoriaMetrics stores field `f` of measurement `m` as the series `m_f` with the tags as labels, and
 * keeps no types: text is stored as 0, and values are kept to about 14 significant digits
 * (1234.5678901234567 reads back as 1234.5678901234).
 */
import {
  bodyLines,
  checkWindow,
  compareRows,
  countFieldOf,
  EngineReadError,
  EXTRA_TAGS,
  FieldType,
  HOUR_MS,
  hourOf,
  MEASUREMENT_TAGS,
  readerRequest,
  type EngineReader,
  type FieldInfo,
  type FieldListQuery,
  type FieldStats,
  type HourlyStats,
  type HourlyStatsQuery,
  type SiteHourCount,
  type WindowQuery,
} from './reader.ts';

export interface VictoriaMetricsSettings {
  /** The engine as `ingest --sink` names it: `influx2`. */
  engine: string;
  /** Base URL, e.g. `http://127.0.0.1:8428`. */
  url: string;
  /** Sent as `Authorization: Token …`, as the writer sends it, when set (VictoriaMetrics ignores it). */
  token?: string;
  /** Timeout of one request, answer included, ms. */
  requestTimeoutMs: number;
  /**
   * Ask for gzipped answers: for a server across a slow link. Off, answers come as they are, which
   * costs both ends less CPU than compressing exports near the server (like `influxGzip` for writes).
   */
  gzip?: boolean;
  /**
   * Ask the server to make everything it received searchable (`GET /internal/force_flush`) before
   * each read; without it, points written in the last second or so may not be seen yet. Default on.
   */
  forceFlush?: boolean;
}

/** A PromQL string literal, double-quoted. */
const promString = (s: string): string => `"${s.replace(/\\/g, '\\\\').replace(/"/g, '\\"')}"`;
/** `s` matched literally inside a regular expression. */
const regexLiteral = (s: string): string => s.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');

/**
 * The series selector of `measurement`'s fields (`names`, or all of them), in one site or device.
 * Series names alone are ambiguous (`telemetry_string_SoC` is `telemetry_string`.`SoC` or
 * `telemetry`.`string_SoC`): the measurement's own tags must be there and the others absent.
 */
export function seriesSelector(
  measurement: string,
  names: readonly string[] | 'all',
  filter: { site?: string | undefined; device?: string | undefined } = {},
): string {
  const fieldPattern = names === 'all' ? '.+' : `(${names.map(regexLiteral).join('|')})`;
  const matchers = [`__name__=~${promString(`${regexLiteral(measurement)}_${fieldPattern}`)}`];
  const own = MEASUREMENT_TAGS[measurement];
  // An unknown measurement: no tag rules, the name alone selects.
  if (own) for (const tag of EXTRA_TAGS) matchers.push(`${tag}${own.includes(tag) ? '!=' : '='}""`);
  if (filter.site !== undefined) matchers.push(`site=${promString(filter.site)}`);
  if (filter.device !== undefined) matchers.push(`device=${promString(filter.device)}`);
  return `{${matchers.join(',')}}`;
}

const DAY_MS = 24 * HOUR_MS;

/** A time as VictoriaMetrics takes it: seconds since the epoch, with ms as decimals. */
const seconds = (ms: number): string => (ms / 1000).toFixed(3);

/** One line of `/api/v1/export`. */
interface ExportedSeries {
  metric: Record<string, string>;
  values: number[];
  timestamps: number[];
}

export class VictoriaMetricsReader implements EngineReader {
  readonly engine: string;
  readonly target: string;
  private readonly base: string;
  private readonly headers: Record<string, string> = {};

  constructor(private readonly settings: VictoriaMetricsSettings) {
    this.base = settings.url.replace(/\/+$/, '');
    this.engine = settings.engine;
    this.target = this.base;
    if (settings.token) this.headers.authorization = `Token ${settings.token}`;
    // fetch asks for gzip by default; near the server, decompressing an export costs more than the transfer.
    this.headers['accept-encoding'] = settings.gzip ? 'gzip' : 'identity';
  }

  /**
   * Exports `<measurement>_<countField>` and `<measurement>_<field>` of every asked-for field for
   * the window and aggregates the samples per device and hour: `count` counts samples of the count
   * field, each field's stats its own samples. Sums add the samples in time order.
   */
  async hourlyStats(query: HourlyStatsQuery): Promise<HourlyStats[]> {
    checkWindow(query);
    const countField = countFieldOf(query);
    const fields = new Set(query.fields);
    const rows = new Map<string, HourlyStats>();
    await this.export(query, [countField, ...fields], (series, field) => {
      const site = series.metric.site ?? '';
      const device = series.metric.device ?? '';
      const counts = field === countField;
      const aggregates = fields.has(field);
      // A series' timestamps are sorted: look the row up only when the hour changes.
      let hourIndex = Number.NaN;
      let row: HourlyStats | undefined;
      let stats: FieldStats | undefined;
      const { values, timestamps } = series;
      for (let i = 0; i < timestamps.length; i++) {
        const t = timestamps[i]!;
        if (t < query.sinceMs || t >= query.untilMs) continue;
        const h = Math.floor(t / HOUR_MS);
        if (h !== hourIndex || row === undefined) {
          hourIndex = h;
          const key = `${site}\n${device}\n${h}`;
          row = rows.get(key);
          if (row === undefined) {
            row = { site, device, hour: hourOf(t), count: 0, fields: {} };
            rows.set(key, row);
          }
          stats = undefined;
          if (aggregates) {
            stats = row.fields[field];
            if (stats === undefined) {
              const v = values[i]!;
              stats = { count: 0, min: v, max: v, sum: 0 };
              row.fields[field] = stats;
            }
          }
        }
        if (counts) row.count++;
        if (stats) {
          const v = values[i]!;
          stats.count++;
          stats.sum += v;
          if (v < stats.min) stats.min = v;
          if (v > stats.max) stats.max = v;
        }
      }
    });
    return [...rows.values()].sort(compareRows);
  }

  /** Exports `<measurement>_<countField>` for the window and counts its samples per site and hour. */
  async countPoints(query: WindowQuery): Promise<SiteHourCount[]> {
    checkWindow(query);
    const rows = new Map<string, SiteHourCount>();
    await this.export(query, [countFieldOf(query)], (series) => {
      const site = series.metric.site ?? '';
      for (const t of series.timestamps) {
        if (t < query.sinceMs || t >= query.untilMs) continue;
        const key = `${site}\n${Math.floor(t / HOUR_MS)}`;
        const row = rows.get(key);
        if (row) row.count++;
        else rows.set(key, { site, hour: hourOf(t), count: 1 });
      }
    });
    return [...rows.values()].sort(compareRows);
  }

  /**
   * The measurement's series names (`/api/v1/label/__name__/values`) in the window, less the
   * measurement's prefix. VictoriaMetrics looks names up by whole days (UTC), so a field seen on a
   * day the window touches is listed. Every field is `number` here (text is stored as 0).
   */
  async listFields(query: FieldListQuery): Promise<FieldInfo[]> {
    checkWindow(query);
    await this.flush(query.signal);
    const prefix = `${query.measurement}_`;
    const form = new URLSearchParams({
      'match[]': seriesSelector(query.measurement, 'all'),
      start: seconds(query.sinceMs),
      end: seconds(query.untilMs - 1),
    });
    const what = `${this.engine} field list at ${this.target}`;
    const names = await readerRequest(
      what,
      `${this.base}/api/v1/label/__name__/values`,
      {
        method: 'POST',
        headers: this.headers,
        body: form,
        timeoutMs: this.settings.requestTimeoutMs,
        signal: query.signal,
      },
      async (res) => {
        const body = (await res.json()) as { status?: string; data?: unknown };
        if (body.status !== 'success' || !Array.isArray(body.data))
          throw new EngineReadError(
            `${what}: unexpected answer ${JSON.stringify(body).slice(0, 200)}`,
            res.status,
          );
        return body.data.map(String);
      },
    );
    return names
      .filter((name) => name.startsWith(prefix) && name.length > prefix.length)
      .map((name) => ({ name: name.slice(prefix.length), type: FieldType.number }))
      .sort((a, b) => (a.name < b.name ? -1 : 1));
  }

  async close(): Promise<void> {
    // fetch's connections belong to the process-wide pool and close themselves when idle.
  }

  private async flush(signal: AbortSignal | undefined): Promise<void> {
    if (this.settings.forceFlush === false) return;
    await readerRequest(
      `${this.engine} force_flush at ${this.target}`,
      `${this.base}/internal/force_flush`,
      { headers: this.headers, timeoutMs: this.settings.requestTimeoutMs, signal },
      (res) => res.arrayBuffer(),
    );
  }

  /**
   * Streams the samples of `fields` of the query's measurement, site and device in its window to
   * `onSeries`, one exported line at a time, with the series' field name. One request per UTC day
   * of the window (each within the request timeout, and far below the server's
   * `-search.maxExportDuration`, 30 days by default); a series whose samples span several days
   * arrives once per day, which the callers' aggregates add up. VictoriaMetrics' export is
   * inclusive at both ends: it is asked for [since, until - 1 ms], and the callers drop anything
   * outside the window all the same.
   */
  private async export(
    query: WindowQuery,
    fields: readonly string[],
    onSeries: (series: ExportedSeries, field: string) => void,
  ): Promise<void> {
    await this.flush(query.signal);
    const selector = seriesSelector(query.measurement, [...new Set(fields)], query);
    for (let from = query.sinceMs; from < query.untilMs;) {
      const to = Math.min(query.untilMs, (Math.floor(from / DAY_MS) + 1) * DAY_MS);
      await this.exportPart(query, selector, from, to, onSeries);
      from = to;
    }
  }

  /** One export request: the samples of `selector` in [fromMs, toMs). */
  private async exportPart(
    query: WindowQuery,
    selector: string,
    fromMs: number,
    toMs: number,
    onSeries: (series: ExportedSeries, field: string) => void,
  ): Promise<void> {
    const prefix = `${query.measurement}_`;
    const form = new URLSearchParams({ 'match[]': selector, start: seconds(fromMs), end: seconds(toMs - 1) });
    const what = `${this.engine} export at ${this.target}`;
    await readerRequest(
      what,
      `${this.base}/api/v1/export`,
      {
        method: 'POST',
        headers: this.headers,
        body: form,
        timeoutMs: this.settings.requestTimeoutMs,
        signal: query.signal,
      },
      async (res) => {
        for await (const line of bodyLines(res)) {
          let series: ExportedSeries;
          try {
            series = JSON.parse(line) as ExportedSeries;
          } catch (err) {
            throw new EngineReadError(`${what}: a line is not JSON: ${line.slice(0, 200)}`, res.status, {
              cause: err,
            });
          }
          const name = series.metric?.__name__ ?? '';
          if (!name.startsWith(prefix) || !Array.isArray(series.values) || !Array.isArray(series.timestamps))
            throw new EngineReadError(`${what}: unexpected line: ${line.slice(0, 200)}`, res.status);
          onSeries(series, name.slice(prefix.length));
        }
      },
    );
  }
}
