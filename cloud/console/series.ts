/**
 * SoC and power of every unit of a site over the last hours, for the site page's chart, read from
 * the engine the ingest consumer writes to with the ingest consumer's own settings (as the engine
 * readers of the swap are built): VictoriaMetrics (the v2 write API here) through PromQL
 * `query_range`, InfluxDB 1.x through InfluxQL. Both answer one request per site, downsampled to
 * at most MAX_POINTS steps.
 */
import { IngestEngine } from '../ingest/config.ts';
import { readerRequest, seriesSelector } from '../ingest/readers/index.ts';

/** One unit's points, aligned: `tS[i]` (epoch seconds) has `socPct[i]` and `powerW[i]`. */
export interface UnitSeries {
  device: string;
  tS: number[];
  socPct: (number | null)[];
  powerW: (number | null)[];
}

export interface SeriesSettings {
  sink: string;
  influx2Url?: string | undefined;
  influx2Token?: string | undefined;
  influx1Url?: string | undefined;
  influx1Database: string;
  influx1RetentionPolicy?: string | undefined;
  influx1Username?: string | undefined;
  influx1Password?: string | undefined;
}

/** Steps per chart: enough for a line, little enough to send each viewer. */
export const MAX_POINTS = 300;
const MIN_STEP_S = 5;
const TIMEOUT_MS = 10_000;

/** The step (s) of a window of `hours`. */
export const stepSecondsOf = (hours: number): number =>
  Math.max(MIN_STEP_S, Math.ceil((hours * 3600) / MAX_POINTS));

/** Points of one unit by time, filled field by field, sorted. */
class Collector {
  private readonly units = new Map<string, Map<number, { soc: number | null; w: number | null }>>();

  add(device: string, tS: number, field: 'soc' | 'w', value: number | null): void {
    let unit = this.units.get(device);
    if (!unit) this.units.set(device, (unit = new Map()));
    const point = unit.get(tS) ?? { soc: null, w: null };
    point[field] = value;
    unit.set(tS, point);
  }

  result(): UnitSeries[] {
    return [...this.units]
      .sort(([a], [b]) => a.localeCompare(b, undefined, { numeric: true }))
      .map(([device, points]) => {
        const times = [...points.keys()].sort((a, b) => a - b);
        return {
          device,
          tS: times,
          socPct: times.map((t) => points.get(t)!.soc),
          powerW: times.map((t) => points.get(t)!.w),
        };
      });
  }
}

const finite = (v: unknown): number | null => {
  const n = typeof v === 'string' ? Number(v) : v;
  return typeof n === 'number' && Number.isFinite(n) ? n : null;
};

/**
 * SoC and W per unit of `site` over the `hours` before `untilMs`. Throws EngineReadError when the
 * engine does not answer; an engine without a URL configured has no chart (empty list).
 */
export async function readSiteSeries(
  settings: SeriesSettings,
  site: string,
  hours: number,
  untilMs: number,
): Promise<UnitSeries[]> {
  const stepS = stepSecondsOf(hours);
  const sinceMs = untilMs - hours * 3_600_000;
  const out = new Collector();
  if (settings.sink === IngestEngine.influx1) {
    if (!settings.influx1Url) return [];
    const base = settings.influx1Url.replace(/\/+$/, '');
    const quote = (s: string): string => `'${s.replace(/\\/g, '\\\\').replace(/'/g, "\\'")}'`;
    const from = settings.influx1RetentionPolicy
      ? `"${settings.influx1RetentionPolicy}"."telemetry"`
      : '"telemetry"';
    const q =
      `SELECT mean("SoC") AS "soc", mean("W") AS "w" FROM ${from} WHERE "site" = ${quote(site)} ` +
      `AND time >= ${Math.floor(sinceMs)}ms AND time < ${Math.ceil(untilMs)}ms ` +
      `GROUP BY time(${stepS}s), "device" fill(none)`;
    const headers: Record<string, string> = { 'content-type': 'application/x-www-form-urlencoded' };
    if (settings.influx1Username)
      headers.authorization = `Basic ${Buffer.from(`${settings.influx1Username}:${settings.influx1Password ?? ''}`).toString('base64')}`;
    type Answer = {
      results?: { series?: { tags?: Record<string, string>; columns: string[]; values: unknown[][] }[] }[];
    };
    const answer = await readerRequest(
      'influx1 chart query',
      `${base}/query?${new URLSearchParams({ db: settings.influx1Database, epoch: 's' })}`,
      { method: 'POST', headers, body: new URLSearchParams({ q }).toString(), timeoutMs: TIMEOUT_MS },
      (res) => res.json() as Promise<Answer>,
    );
    for (const series of answer.results?.[0]?.series ?? []) {
      const device = series.tags?.device ?? '';
      const [t, soc, w] = ['time', 'soc', 'w'].map((c) => series.columns.indexOf(c));
      for (const row of series.values) {
        const tS = finite(row[t!]);
        if (tS === null) continue;
        out.add(device, tS, 'soc', finite(row[soc!]));
        out.add(device, tS, 'w', finite(row[w!]));
      }
    }
    return out.result();
  }
  if (!settings.influx2Url) return [];
  const base = settings.influx2Url.replace(/\/+$/, '');
  const params = new URLSearchParams({
    query: seriesSelector('telemetry', ['SoC', 'W'], { site }),
    start: (sinceMs / 1000).toFixed(3),
    end: (untilMs / 1000).toFixed(3),
    step: `${stepS}s`,
  });
  type Answer = { data?: { result?: { metric: Record<string, string>; values: [number, string][] }[] } };
  const answer = await readerRequest(
    'influx2 chart query',
    `${base}/api/v1/query_range?${params}`,
    {
      headers: settings.influx2Token ? { authorization: `Token ${settings.influx2Token}` } : {},
      timeoutMs: TIMEOUT_MS,
    },
    (res) => res.json() as Promise<Answer>,
  );
  for (const series of answer.data?.result ?? []) {
    const field = series.metric.__name__ === 'telemetry_SoC' ? 'soc' : 'w';
    const device = series.metric.device ?? '';
    for (const [tS, value] of series.values) out.add(device, Math.round(tS), field, finite(value));
  }
  return out.result();
}
