/**
 * Validation of device payloads as they arrive: raw bytes and the kind their topic claims, in; a
 * typed value with its device time, or one line saying why not, out. It runs once per message in
 * the edge bridge, so validators are compiled once at load and the cheap checks come first.
 */
import type { Static, TSchema } from 'typebox';
import { Compile } from 'typebox/compile';
import type { Validator } from 'typebox/compile';
import { DeviceEventSchema, type DeviceEvent } from './event.ts';
import { formatErrors, show } from './format-errors.ts';
import { StatusSchema, type Status } from './status.ts';
import { DEVICE_KINDS, isDeviceKind, type DeviceKind } from './subjects.ts';
import { TelemetrySchema, type Telemetry } from './telemetry.ts';
import { deviceTimeMs } from './time.ts';

/** Version of the device payload schemas; bumped on any change a consumer could notice. */
export const SCHEMA_VERSION = 1;

/** Largest payload accepted unless the caller says otherwise, in bytes (a reading is ~300). */
export const DEFAULT_MAX_PAYLOAD_BYTES = 65_536;

/** The schema of each device kind, version SCHEMA_VERSION. */
export const PAYLOAD_SCHEMAS = {
  telemetry: TelemetrySchema,
  status: StatusSchema,
  event: DeviceEventSchema,
} as const satisfies Record<DeviceKind, TSchema>;

/** `<kind>/<version>`, e.g. `telemetry/1`: the value of the `Switchyard-Schema` header. */
export const schemaTag = (kind: DeviceKind): string => `${kind}/${SCHEMA_VERSION}`;

export type DecodedPayload =
  | { kind: 'telemetry'; value: Telemetry }
  | { kind: 'status'; value: Status }
  | { kind: 'event'; value: DeviceEvent };

/**
 * A valid payload with its device time in epoch ms (`tsMs`) and counter (`seq`), or the one-line
 * reason it is not valid.
 */
export type DecodeResult =
  ({ ok: true; tsMs: number; seq: number } & DecodedPayload) | { ok: false; reason: string };

export interface DecodeOptions {
  /** Payloads larger than this are refused before decoding, in bytes. */
  maxBytes?: number;
}

const VALIDATORS = Object.fromEntries(
  DEVICE_KINDS.map((kind) => [kind, Compile(PAYLOAD_SCHEMAS[kind])]),
) as Record<DeviceKind, Validator>;

// fatal: invalid UTF-8 throws rather than turning into U+FFFD, which would change the payload's
// meaning without anyone noticing. ignoreBOM false: a BOM is stripped, as JSON.parse would choke.
const UTF8 = new TextDecoder('utf-8', { fatal: true });

const fail = (reason: string): DecodeResult => ({ ok: false, reason });

/**
 * Validates raw bytes claimed to be `kind` against that kind's schema (version SCHEMA_VERSION).
 * Never throws. Reasons, one line each: `unknown kind "foo"`, `payload is 70000 bytes, over the
 * 65536-byte limit`, `payload is not valid UTF-8`, `malformed JSON: …`, `telemetry: expected a JSON
 * object, got an array`, schema problems joined with `; ` (`telemetry.SoC: expected number, got
 * "87%"`), `telemetry.ts: not a valid time`.
 */
export function decodePayload(kind: string, bytes: Uint8Array, options: DecodeOptions = {}): DecodeResult {
  if (!isDeviceKind(kind)) return fail(`unknown kind ${show(kind)}`);
  const maxBytes = options.maxBytes ?? DEFAULT_MAX_PAYLOAD_BYTES;
  if (bytes.byteLength > maxBytes)
    return fail(`payload is ${bytes.byteLength} bytes, over the ${maxBytes}-byte limit`);
  let text: string;
  try {
    text = UTF8.decode(bytes);
  } catch {
    return fail('payload is not valid UTF-8');
  }
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch (err) {
    return fail(`malformed JSON: ${oneLine((err as Error).message)}`);
  }
  if (value === null || typeof value !== 'object' || Array.isArray(value))
    return fail(`${kind}: expected a JSON object, got ${show(value)}`);
  const validator = VALIDATORS[kind];
  if (!validator.Check(value)) return fail(formatErrors(kind, value, validator.Errors(value)).join('; '));
  const payload = value as { ts: string | number; seq: number };
  const tsMs = deviceTimeMs(payload.ts);
  if (Number.isNaN(tsMs)) return fail(`${kind}.ts: not a valid time`);
  return { ok: true, tsMs, seq: payload.seq, kind, value } as DecodeResult;
}

const oneLine = (text: string): string => text.replace(/\s+/g, ' ').trim();

/** Static type of a kind's payload. */
export type PayloadOf<K extends DeviceKind> = Static<(typeof PAYLOAD_SCHEMAS)[K]>;
