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
 * Why a message is kept aside as kind `invalid`, as a code: the `reason` label of
 * `switchyard_edge_invalid_total` (dashboards match these strings; do not change them). The human
 * reason travels beside it, in the `Switchyard-Invalid-Reason` header.
 */
export const InvalidReason = {
  /** The topic names no device kind. */
  unknownKind: 'unknown_kind',
  /** Over the size limit. */
  tooLarge: 'too_large',
  notUtf8: 'not_utf8',
  malformedJson: 'malformed_json',
  /** Well-formed JSON that is not a valid payload of its kind (types, ranges, required, `ts`). */
  schema: 'schema',
  /** The topic's device level is not a usable id (checked by the bridge, before decoding). */
  badDeviceId: 'bad_device_id',
  /** Device time too far ahead of the gateway's clock (checked by the bridge, after decoding). */
  clockSkew: 'clock_skew',
  /** The site server refused to store it for good (checked by the bridge, after publishing). */
  refused: 'refused',
} as const;
export type InvalidReason = (typeof InvalidReason)[keyof typeof InvalidReason];

/** The invalid reasons `decodePayload` itself finds. */
export type DecodeFailure = Exclude<
  InvalidReason,
  typeof InvalidReason.badDeviceId | typeof InvalidReason.clockSkew | typeof InvalidReason.refused
>;

/**
 * A valid payload with its device time in epoch ms (`tsMs`) and counter (`seq`), or why it is not
 * valid: a `code` to count by and a one-line `reason` for a person.
 */
export type DecodeResult =
  | ({ ok: true; tsMs: number; seq: number } & DecodedPayload)
  | { ok: false; code: DecodeFailure; reason: string };

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

const fail = (code: DecodeFailure, reason: string): DecodeResult => ({ ok: false, code, reason });

/**
 * Validates raw bytes claimed to be `kind` against that kind's schema (version SCHEMA_VERSION).
 * Never throws. Codes and reasons (one line each): `unknown_kind` (`unknown kind "foo"`),
 * `too_large` (`payload is 70000 bytes, over the 65536-byte limit`), `not_utf8` (`payload is not
 * valid UTF-8`), `malformed_json` (`malformed JSON: …`), `schema` (`telemetry: expected a JSON
 * object, got an array`, schema problems joined with `; ` such as `telemetry.SoC: expected number,
 * got "87%"`, or `telemetry.ts: not a valid time`).
 */
export function decodePayload(kind: string, bytes: Uint8Array, options: DecodeOptions = {}): DecodeResult {
  if (!isDeviceKind(kind)) return fail(InvalidReason.unknownKind, `unknown kind ${show(kind)}`);
  const maxBytes = options.maxBytes ?? DEFAULT_MAX_PAYLOAD_BYTES;
  if (bytes.byteLength > maxBytes)
    return fail(
      InvalidReason.tooLarge,
      `payload is ${bytes.byteLength} bytes, over the ${maxBytes}-byte limit`,
    );
  let text: string;
  try {
    text = UTF8.decode(bytes);
  } catch {
    return fail(InvalidReason.notUtf8, 'payload is not valid UTF-8');
  }
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch (err) {
    return fail(InvalidReason.malformedJson, `malformed JSON: ${oneLine((err as Error).message)}`);
  }
  if (value === null || typeof value !== 'object' || Array.isArray(value))
    return fail(InvalidReason.schema, `${kind}: expected a JSON object, got ${show(value)}`);
  const validator = VALIDATORS[kind];
  if (!validator.Check(value))
    return fail(InvalidReason.schema, formatErrors(kind, value, validator.Errors(value)).join('; '));
  const payload = value as { ts: string | number; seq: number };
  const tsMs = deviceTimeMs(payload.ts);
  if (Number.isNaN(tsMs)) return fail(InvalidReason.schema, `${kind}.ts: not a valid time`);
  return { ok: true, tsMs, seq: payload.seq, kind, value } as DecodeResult;
}

const oneLine = (text: string): string => text.replace(/\s+/g, ' ').trim();

/** Static type of a kind's payload. */
export type PayloadOf<K extends DeviceKind> = Static<(typeof PAYLOAD_SCHEMAS)[K]>;
