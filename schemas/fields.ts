/**
 * Building blocks shared by the device payload schemas: the envelope every payload carries (`ts`,
 * `seq`) and the field kinds of the SunSpec models, with the ranges physics makes certain. Values
 * are engineering units (SunSpec scale factors already applied), so every reading is a JSON number.
 */
import Type from 'typebox';

/** The largest `seq` kept exact in a double (and so in a message id). */
export const MAX_SEQ = Number.MAX_SAFE_INTEGER;

/** Fields of every device payload. */
export const envelope = {
  /**
   * Device time: ISO-8601 / RFC 3339 text with a timezone (`2025-03-01T12:00:00.250Z`,
   * `…+01:00`), or milliseconds since the Unix epoch. Whether the text is a real time is checked
   * after the schema (decodePayload), so the reason can say so plainly.
   */
  ts: Type.Union([Type.String({ maxLength: 64 }), Type.Number({ minimum: 0 })], {
    description: 'device time: ISO-8601 with timezone, or epoch milliseconds',
  }),
  /** Device message counter; restarts when the device reboots. */
  seq: Type.Integer({ minimum: 0, maximum: MAX_SEQ, description: 'device message counter' }),
} as const;

type Opts = { description?: string };

/** A reading without physical bounds (current, power: signed). */
export const num = (description?: string) => Type.Optional(Type.Number({ description }));
/** A percentage, 0..100 (SoC, SoH, DoD). */
export const pct = (description?: string) =>
  Type.Optional(Type.Number({ minimum: 0, maximum: 100, description }));
/** A magnitude that cannot be negative (voltage, apparent power, energy totals, capacities). */
export const nonNeg = (description?: string) => Type.Optional(Type.Number({ minimum: 0, description }));
/** A temperature in °C: nothing is colder than absolute zero. */
export const celsius = (description?: string) =>
  Type.Optional(Type.Number({ minimum: -273.15, description }));
/** A count (cycles, strings, cells balancing). */
export const count = (description?: string) => Type.Optional(Type.Integer({ minimum: 0, description }));
/** A 1-based index (string, module or cell number). */
export const index = (description?: string) => Type.Optional(Type.Integer({ minimum: 1, description }));
/** A 32-bit SunSpec bitfield, as an unsigned integer. */
export const bits32 = (description?: string) =>
  Type.Optional(Type.Integer({ minimum: 0, maximum: 0xffff_ffff, description }));
/** One of a model's enumeration symbols. */
export const symbol = <const T extends readonly string[]>(symbols: T, options: Opts = {}) =>
  Type.Enum(symbols, options);
