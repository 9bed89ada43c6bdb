/**
 * `migrate verify`: the old engine against the new one, per site, device and hour (UTC), over a
 * window both should hold. Each side is read through its EngineReader (cloud/ingest/readers/); the
 * comparison itself (compareHourlyStats) is pure, so what counts as a mismatch is tested without
 * servers.
 *
 * What is compared, per row (site, device, hour) of a measurement (`telemetry` by default):
 * - the point count, exactly;
 * - per field (`SoC` and `W` by default; with `allFields`, every numeric field either engine has):
 *   how many points carry it, exactly; min and max, and the sum, within a relative tolerance.
 *
 * Why a tolerance, and which: engines add in different orders (per shard, per block), and
 * VictoriaMetrics keeps values as a decimal mantissa of about 14 significant digits, so a reading
 * of 0.30000000000000004 comes back as that from InfluxDB and as 0.3 from VictoriaMetrics. Min and
 * max may differ by `relativeTolerance` × the larger magnitude. A sum may differ by
 * `relativeTolerance` × the largest of both sums and count × largest |value| of each side (a bound
 * on the sum of magnitudes, which is what rounding error grows with: a sum that cancels to near 0
 * has no meaningful relative error of its own). The default, 1e-9, is over a thousand times the
 * rounding error of adding an hour of one-second readings in float64 (3600 × 2.2e-16 ≈ 8e-13), and
 * far below any lost or altered reading of a real value. A missing point always shows as a count.
 */
import { Measurement } from './line-protocol.ts';
import { FieldType, type EngineReader, type FieldInfo, type HourlyStats } from './readers/reader.ts';

/** Fields compared unless told otherwise: the bank's state of charge and its power. */
export const DEFAULT_VERIFY_FIELDS: readonly string[] = ['SoC', 'W'];

/** Default relative tolerance of min, max and sum (see the module's comment). */
export const DEFAULT_RELATIVE_TOLERANCE = 1e-9;

/** What differs. */
export const MismatchStat = { count: 'count', min: 'min', max: 'max', sum: 'sum' } as const;
export type MismatchStat = (typeof MismatchStat)[keyof typeof MismatchStat];

/** The field name of a row's point count in a Mismatch. */
export const COUNT = 'count';

/** One difference between the engines. */
export interface Mismatch {
  site: string;
  device: string;
  /** The hour in UTC, `YYYY-MM-DDTHH`. */
  hour: string;
  /** `count` for the row's point count, else the field. */
  field: string;
  /** `count`: of points (field `count`) or of the points carrying the field; else the field's min, max or sum. */
  stat: MismatchStat;
  /** The old engine's value (0 points where it has none). */
  old: number;
  /** The new engine's value (0 points where it has none). */
  new: number;
  /** The side that has no such row at all (field `count`), or no value of the field in the row. */
  missing?: 'old' | 'new';
}

export interface CompareOptions {
  /** Fields to compare (those the rows were read with). */
  fields: readonly string[];
  /** Default DEFAULT_RELATIVE_TOLERANCE. */
  relativeTolerance?: number;
}

export interface Comparison {
  /** Rows (site, device, hour) compared: those either side has. */
  compared: number;
  /** Sorted by site, device, hour; within a row, the count first, then fields in the order asked. */
  mismatches: Mismatch[];
}

const rowKey = (r: { site: string; device: string; hour: string }): string =>
  `${r.site}\n${r.device}\n${r.hour}`;

function keyed(rows: readonly HourlyStats[], side: string): Map<string, HourlyStats> {
  const map = new Map<string, HourlyStats>();
  for (const row of rows) {
    const key = rowKey(row);
    // A reader returns each row once; two would be a reader's bug, not a difference of the data.
    if (map.has(key)) throw new Error(`${side} engine returned ${row.site} ${row.device} ${row.hour} twice`);
    map.set(key, row);
  }
  return map;
}

/** True if `a` and `b` differ by at most `relativeTolerance` × `scale`. */
const close = (a: number, b: number, scale: number, relativeTolerance: number): boolean =>
  a === b || Math.abs(a - b) <= relativeTolerance * scale;

/**
 * The mismatches between two engines' rows (EngineReader.hourlyStats of the same query). Pure.
 * A row one side lacks is one mismatch of its point count (0 on that side, `missing` set); a field
 * one side lacks in a row both have is one mismatch of its count. Otherwise every count, min, max
 * and sum that differs (beyond the tolerance) is one mismatch.
 */
export function compareHourlyStats(
  oldRows: readonly HourlyStats[],
  newRows: readonly HourlyStats[],
  options: CompareOptions,
): Comparison {
  const tolerance = options.relativeTolerance ?? DEFAULT_RELATIVE_TOLERANCE;
  const olds = keyed(oldRows, 'old');
  const news = keyed(newRows, 'new');
  const keys = [...new Set([...olds.keys(), ...news.keys()])].sort();
  const mismatches: Mismatch[] = [];
  for (const key of keys) {
    const o = olds.get(key);
    const n = news.get(key);
    const { site, device, hour } = (o ?? n)!;
    const at = { site, device, hour };
    if (!o || !n) {
      mismatches.push({
        ...at,
        field: COUNT,
        stat: MismatchStat.count,
        old: o?.count ?? 0,
        new: n?.count ?? 0,
        missing: o ? 'new' : 'old',
      });
      continue;
    }
    if (o.count !== n.count)
      mismatches.push({ ...at, field: COUNT, stat: MismatchStat.count, old: o.count, new: n.count });
    for (const field of options.fields) {
      const a = o.fields[field];
      const b = n.fields[field];
      if (!a && !b) continue;
      if (!a || !b) {
        mismatches.push({
          ...at,
          field,
          stat: MismatchStat.count,
          old: a?.count ?? 0,
          new: b?.count ?? 0,
          missing: a ? 'new' : 'old',
        });
        continue;
      }
      if (a.count !== b.count)
        mismatches.push({ ...at, field, stat: MismatchStat.count, old: a.count, new: b.count });
      for (const stat of [MismatchStat.min, MismatchStat.max] as const) {
        if (!close(a[stat], b[stat], Math.max(Math.abs(a[stat]), Math.abs(b[stat])), tolerance))
          mismatches.push({ ...at, field, stat, old: a[stat], new: b[stat] });
      }
      const scale = Math.max(
        Math.abs(a.sum),
        Math.abs(b.sum),
        a.count * Math.max(Math.abs(a.min), Math.abs(a.max)),
        b.count * Math.max(Math.abs(b.min), Math.abs(b.max)),
      );
      if (!close(a.sum, b.sum, scale, tolerance))
        mismatches.push({ ...at, field, stat: MismatchStat.sum, old: a.sum, new: b.sum });
    }
  }
  return { compared: keys.length, mismatches };
}

/**
 * The fields `allFields` compares: every field either engine lists, less those either engine
 * stores as text or booleans (they have no min or sum; VictoriaMetrics, which stores text as 0,
 * would only compare zeros). Sorted. Pure.
 */
export function fieldsToCompare(oldFields: readonly FieldInfo[], newFields: readonly FieldInfo[]): string[] {
  const all = [...oldFields, ...newFields];
  const notNumeric = new Set(all.filter((f) => f.type !== FieldType.number).map((f) => f.name));
  return [...new Set(all.map((f) => f.name))].filter((name) => !notNumeric.has(name)).sort();
}

export interface VerifyOptions {
  /** Start of the window, ms since the epoch, inclusive. */
  sinceMs: number;
  /** End of the window, ms since the epoch, exclusive. */
  untilMs: number;
  site?: string;
  device?: string;
  /** Default `telemetry`. */
  measurement?: string;
  /** Fields to compare; default DEFAULT_VERIFY_FIELDS. Ignored with `allFields`. */
  fields?: readonly string[];
  /** Compare every numeric field of the measurement either engine has (fieldsToCompare). */
  allFields?: boolean;
  /** Default DEFAULT_RELATIVE_TOLERANCE. */
  relativeTolerance?: number;
  /** Cancels the reads. */
  signal?: AbortSignal;
}

export interface VerifyReport extends Comparison {
  measurement: string;
  /** The fields compared besides the point count. */
  fields: string[];
}

/**
 * Reads the same window from both engines (at the same time) and compares them
 * (compareHourlyStats). Resolves with the report whatever it finds; rejects only when a read
 * fails (EngineReadError) or is aborted. `compared` is the number of (site, device, hour) rows.
 */
export async function verifyEngines(
  oldReader: EngineReader,
  newReader: EngineReader,
  options: VerifyOptions,
): Promise<VerifyReport> {
  const measurement = options.measurement ?? Measurement.telemetry;
  const { sinceMs, untilMs, signal } = options;
  const window = {
    sinceMs,
    untilMs,
    measurement,
    ...(options.site !== undefined ? { site: options.site } : {}),
    ...(options.device !== undefined ? { device: options.device } : {}),
    ...(signal ? { signal } : {}),
  };
  let fields = [...(options.fields ?? DEFAULT_VERIFY_FIELDS)];
  if (options.allFields) {
    const [a, b] = await Promise.all([oldReader.listFields(window), newReader.listFields(window)]);
    fields = fieldsToCompare(a, b);
  }
  const [oldRows, newRows] = await Promise.all([
    oldReader.hourlyStats({ ...window, fields }),
    newReader.hourlyStats({ ...window, fields }),
  ]);
  const comparison = compareHourlyStats(oldRows, newRows, {
    fields,
    ...(options.relativeTolerance !== undefined ? { relativeTolerance: options.relativeTolerance } : {}),
  });
  return { measurement, fields, ...comparison };
}
