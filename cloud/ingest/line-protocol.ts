/**
 * Device payloads as InfluxDB line protocol: the one mapping both ingest engines share (InfluxDB v2
 * API / VictoriaMetrics and InfluxDB 1.x), pure and deterministic so that a replayed message
 * writes the same series at the same timestamp and changes nothing. docs/ingest.md has the mapping
 * (measurements, tags, fields) and why it is so.
 */
import {
  decodePayload,
  isDeviceKind,
  severityOf,
  type DecodeResult,
  type Evt1Alarm,
} from '../../schemas/index.ts';

/** Measurement names. */
export const Measurement = {
  telemetry: 'telemetry',
  telemetryString: 'telemetry_string',
  telemetryModule: 'telemetry_module',
  status: 'status',
  event: 'event',
} as const;
export type Measurement = (typeof Measurement)[keyof typeof Measurement];

/** Tag keys. */
export const Tag = {
  site: 'site',
  device: 'device',
  string: 'string',
  module: 'module',
  alarm: 'alarm',
  severity: 'severity',
} as const;

/** Prefix of the 701 AC fields in the `telemetry` point. */
export const AC_PREFIX = 'ac_';
/** Suffix of the numeric field written next to each enumeration's text. */
export const CODE_SUFFIX = '_code';

/** One point: a measurement, tags, at least one field, and a time in ms since the epoch. */
export interface Point {
  measurement: string;
  tags: Readonly<Record<string, string>>;
  /** Numbers are written as floats, strings as string fields. */
  fields: Readonly<Record<string, number | string>>;
  timeMs: number;
}

/**
 * SunSpec register values of the enumerations devices send as symbols (802 State, ChaSt,
 * LocRemCtl; 701 ACType, St, InvSt, ConnSt; 804 ConFail), so that an engine that cannot store text
 * (VictoriaMetrics) still has the state. Keyed by field name: the names do not collide across the
 * models where they are text.
 */
export const SUNSPEC_CODES: Readonly<Record<string, Readonly<Record<string, number>>>> = {
  State: {
    DISCONNECTED: 1,
    INITIALIZING: 2,
    CONNECTED: 3,
    STANDBY: 4,
    SOC_PROTECTION: 5,
    SUSPENDING: 6,
    FAULT: 99,
  },
  ChaSt: { OFF: 1, EMPTY: 2, DISCHARGING: 3, CHARGING: 4, FULL: 5, HOLDING: 6, TESTING: 7 },
  LocRemCtl: { REMOTE: 0, LOCAL: 1 },
  ACType: { SINGLE_PHASE: 0, SPLIT_PHASE: 1, THREE_PHASE: 2 },
  St: { OFF: 0, ON: 1 },
  InvSt: {
    OFF: 0,
    SLEEPING: 1,
    STARTING: 2,
    RUNNING: 3,
    THROTTLED: 4,
    SHUTTING_DOWN: 5,
    FAULT: 6,
    STANDBY: 7,
  },
  ConnSt: { DISCONNECTED: 0, CONNECTED: 1 },
  ConFail: {
    NO_FAILURE: 0,
    BUTTON_PUSHED: 1,
    STR_GROUND_FAULT: 2,
    OUTSIDE_VOLTAGE_RANGE: 3,
    STRING_NOT_ENABLED: 4,
    FUSE_OPEN: 5,
    CONTACTOR_FAILURE: 6,
    PRECHARGE_FAILURE: 7,
    STRING_FAULT: 8,
  },
};

// ---------------------------------------------------------------------------------------------
// Line protocol text

// Line protocol has no escape for line breaks: a raw one ends the line (VictoriaMetrics then drops
// both halves). Keys, tags and text carry them as the two characters `\n`, `\r`, `\t`.
const controls = (s: string): string => s.replace(/\n/g, '\\n').replace(/\r/g, '\\r').replace(/\t/g, '\\t');

// Almost every name and value needs no escaping: one test spares the replacements.
const MEASUREMENT_SPECIAL = /[, \n\r\t]/;
const KEY_SPECIAL = /[,= \n\r\t]/;
const STRING_SPECIAL = /[\\"\n\r\t]/;

/** A measurement name: commas and spaces escaped. */
export const escapeMeasurement = (s: string): string =>
  MEASUREMENT_SPECIAL.test(s) ? controls(s.replace(/[, ]/g, (c) => `\\${c}`)) : s;

/** A tag key, tag value or field key: commas, equals signs and spaces escaped. */
export const escapeKey = (s: string): string =>
  KEY_SPECIAL.test(s) ? controls(s.replace(/[,= ]/g, (c) => `\\${c}`)) : s;

/** A string field value, quoted: backslashes and double quotes escaped. */
export const quoteString = (s: string): string =>
  `"${STRING_SPECIAL.test(s) ? controls(s.replace(/[\\"]/g, (c) => `\\${c}`)) : s}"`;

/**
 * A float field value. No `i` suffix, ever: `3` is the float 3 in line protocol. Exponents
 * (`1e+21`, `1e-7`) are accepted by InfluxDB 1.x and VictoriaMetrics; -0 is written as 0.
 */
export function formatFloat(value: number): string {
  if (!Number.isFinite(value)) throw new RangeError(`not a finite number: ${value}`);
  return Object.is(value, -0) ? '0' : String(value);
}

/**
 * One line of line protocol (no trailing newline). Tags and fields are sorted by key so that the
 * same point always gives the same bytes; empty tag values are left out (line protocol has none).
 * Throws RangeError for a point without fields or a non-finite number.
 */
export function toLine(point: Point): string {
  let line = escapeMeasurement(point.measurement);
  const { tags, fields } = point;
  // Keys are sorted by UTF-16 code units, which is what sort() without a comparator does.
  for (const key of Object.keys(tags).sort()) {
    const value = tags[key]!;
    if (value !== '') line += `,${escapeKey(key)}=${escapeKey(value)}`;
  }
  const keys = Object.keys(fields).sort();
  if (keys.length === 0) throw new RangeError(`point of ${point.measurement} has no fields`);
  let separator = ' ';
  for (const key of keys) {
    const value = fields[key]!;
    line += `${separator}${escapeKey(key)}=${typeof value === 'number' ? formatFloat(value) : quoteString(value)}`;
    separator = ',';
  }
  return `${line} ${Math.trunc(point.timeMs)}`;
}

/** Line protocol of several points, one per line. */
export const toLines = (points: readonly Point[]): string => points.map(toLine).join('\n');

// ---------------------------------------------------------------------------------------------
// Payload → points

type Json = Record<string, unknown>;
const isObject = (v: unknown): v is Json => typeof v === 'object' && v !== null && !Array.isArray(v);

/**
 * Fields of one flat JSON object: finite numbers as floats, booleans as 1/0, text as string fields
 * plus `<key>_code` when the key is a SunSpec enumeration; everything else (objects, arrays, null)
 * is left out. Keys in `skip` are not fields (they are tags, the timestamp or nested groups).
 * The fields are added to `into` (a new object by default).
 */
export function fieldsOf(
  object: Json,
  prefix = '',
  skip: ReadonlySet<string> = NOTHING,
  into: Record<string, number | string> = {},
): Record<string, number | string> {
  for (const key in object) {
    if (!Object.hasOwn(object, key) || skip.has(key)) continue;
    const value = object[key];
    const name = prefix === '' ? key : `${prefix}${key}`;
    if (typeof value === 'number') {
      if (Number.isFinite(value)) into[name] = value;
    } else if (typeof value === 'boolean') {
      into[name] = value ? 1 : 0;
    } else if (typeof value === 'string') {
      into[name] = value;
      const code = SUNSPEC_CODES[key]?.[value];
      if (code !== undefined) into[`${name}${CODE_SUFFIX}`] = code;
    }
  }
  return into;
}

const NOTHING: ReadonlySet<string> = new Set();

function hasFields(p: Point): boolean {
  for (const _ in p.fields) return true;
  return false;
}

/** Keys of the device payload envelope and groups, which are never fields themselves. */
const TELEMETRY_SKIP = new Set(['ts', 'strings', 'modules', 'ac']);
const STRING_SKIP = new Set(['Idx']);
const MODULE_SKIP = new Set(['Str', 'Idx']);
const ENVELOPE_SKIP = new Set(['ts']);
const EVENT_SKIP = new Set(['ts', 'alarm', 'severity', 'action']);

/** Where a message came from: the subject's site and device. */
export interface PointSource {
  site: string;
  device: string;
}

/**
 * Points of a validated `telemetry` payload: one `telemetry` point (bank level plus `ac_` fields),
 * one `telemetry_string` point per `strings` row and one `telemetry_module` point per `modules`
 * row. Rows without any field are left out.
 */
export function telemetryPoints(source: PointSource, value: Json, timeMs: number): Point[] {
  const tags = { [Tag.site]: source.site, [Tag.device]: source.device };
  const device: Point = {
    measurement: Measurement.telemetry,
    tags,
    fields: isObject(value.ac)
      ? fieldsOf(value.ac, AC_PREFIX, NOTHING, fieldsOf(value, '', TELEMETRY_SKIP))
      : fieldsOf(value, '', TELEMETRY_SKIP),
    timeMs,
  };
  const points = [device];
  for (const row of Array.isArray(value.strings) ? value.strings : []) {
    if (!isObject(row)) continue;
    points.push({
      measurement: Measurement.telemetryString,
      tags: { ...tags, [Tag.string]: String(row.Idx) },
      fields: fieldsOf(row, '', STRING_SKIP),
      timeMs,
    });
  }
  for (const row of Array.isArray(value.modules) ? value.modules : []) {
    if (!isObject(row)) continue;
    points.push({
      measurement: Measurement.telemetryModule,
      tags: { ...tags, [Tag.string]: String(row.Str), [Tag.module]: String(row.Idx) },
      fields: fieldsOf(row, '', MODULE_SKIP),
      timeMs,
    });
  }
  return points.filter(hasFields);
}

/** The `status` point of a validated status payload. */
export function statusPoints(source: PointSource, value: Json, timeMs: number): Point[] {
  const point: Point = {
    measurement: Measurement.status,
    tags: { [Tag.site]: source.site, [Tag.device]: source.device },
    fields: fieldsOf(value, '', ENVELOPE_SKIP),
    timeMs,
  };
  return [point].filter(hasFields);
}

/**
 * The `event` point of a validated event payload. `alarm` and `severity` are tags, not fields: a
 * device can raise two alarms in the same millisecond, and as fields the second would overwrite
 * the first (same series, same time); as tags each alarm is its own series, and VictoriaMetrics,
 * which keeps no text, can still tell them apart. `severity` falls back to `defaultSeverity`.
 */
export function eventPoints(
  source: PointSource,
  value: Json,
  timeMs: number,
  defaultSeverity: (alarm: string) => string,
): Point[] {
  const alarm = String(value.alarm);
  const action = String(value.action);
  const severity = typeof value.severity === 'string' ? value.severity : defaultSeverity(alarm);
  return [
    {
      measurement: Measurement.event,
      tags: {
        [Tag.site]: source.site,
        [Tag.device]: source.device,
        [Tag.alarm]: alarm,
        [Tag.severity]: severity,
      },
      fields: { ...fieldsOf(value, '', EVENT_SKIP), action, raised: action === 'raised' ? 1 : 0 },
      timeMs,
    },
  ];
}

/** Points of a decoded device payload. */
export function pointsOf(source: PointSource, decoded: DecodeResult & { ok: true }): Point[] {
  const timeMs = Math.trunc(decoded.tsMs);
  switch (decoded.kind) {
    case 'telemetry':
      return telemetryPoints(source, decoded.value, timeMs);
    case 'status':
      return statusPoints(source, decoded.value, timeMs);
    case 'event':
      return eventPoints(source, decoded.value, timeMs, (alarm) => severityOf(alarm as Evt1Alarm));
  }
}

/** What ingest does with one message. */
export type MessagePoints =
  /** Write these points (none for a payload without any field, which cannot happen in v1). */
  | { outcome: 'write'; points: Point[] }
  /** A device payload that does not decode: it can never be written, dead-letter it. */
  | { outcome: 'reject'; reason: string }
  /** Not a device kind (`invalid`): not ingest's to write; the archive keeps it. */
  | { outcome: 'skip'; reason: string };

/**
 * Decodes a stream message and maps it to points. Never throws. `kind` is the subject's kind;
 * `site` and `device` become tags.
 */
export function messagePoints(message: {
  site: string;
  device: string;
  kind: string;
  payload: Uint8Array;
}): MessagePoints {
  if (!isDeviceKind(message.kind)) return { outcome: 'skip', reason: `kind ${message.kind} is not ingested` };
  const decoded = decodePayload(message.kind, message.payload);
  if (!decoded.ok) return { outcome: 'reject', reason: `payload does not decode: ${decoded.reason}` };
  return { outcome: 'write', points: pointsOf({ site: message.site, device: message.device }, decoded) };
}
