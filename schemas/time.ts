/**
 * Device time. Devices send `ts` as ISO-8601 / RFC 3339 text with a timezone or as epoch
 * milliseconds; the pipeline works in epoch milliseconds.
 */

// Date, `T` (or a space, as RFC 3339 allows), hours and minutes, optional seconds and fraction, and
// a zone that must be there: a time without one would be read in the gateway's local zone.
const ISO =
  /^(\d{4})-(\d{2})-(\d{2})[Tt ](\d{2}):(\d{2})(?::(\d{2})(?:[.,](\d{1,9}))?)?(?:([Zz])|([+-])(\d{2}):?(\d{2}))$/;

/**
 * Epoch milliseconds of a device time; NaN if it is not one. Text must be ISO-8601 with a
 * timezone (`Z` or `±hh:mm`); fractions finer than a millisecond are truncated. A number is taken
 * as epoch milliseconds and returned as is if finite and not negative.
 */
export function deviceTimeMs(ts: string | number): number {
  if (typeof ts === 'number') return Number.isFinite(ts) && ts >= 0 ? ts : NaN;
  if (typeof ts !== 'string') return NaN;
  const m = ISO.exec(ts);
  if (!m) return NaN;
  const year = Number(m[1]);
  const month = Number(m[2]);
  const day = Number(m[3]);
  const hour = Number(m[4]);
  const minute = Number(m[5]);
  const second = m[6] === undefined ? 0 : Number(m[6]);
  const ms = m[7] === undefined ? 0 : Number(m[7].slice(0, 3).padEnd(3, '0'));
  if (month < 1 || month > 12 || day < 1 || hour > 23 || minute > 59 || second > 59) return NaN;
  let offsetMin = 0;
  if (m[8] === undefined) {
    const oh = Number(m[10]);
    const om = Number(m[11]);
    if (oh > 23 || om > 59) return NaN;
    offsetMin = (m[9] === '-' ? -1 : 1) * (oh * 60 + om);
  }
  const utc = Date.UTC(year, month - 1, day, hour, minute, second, ms);
  // Date.UTC rolls 31 February over into March: reject days the month does not have.
  if (new Date(utc).getUTCDate() !== day) return NaN;
  return utc - offsetMin * 60_000;
}
