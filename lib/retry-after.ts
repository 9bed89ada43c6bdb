/**
 * A store's own retry hint: the HTTP `Retry-After` header that databases and S3 send with 429 and
 * 503 (RFC 9110 §10.2.3). Sinks pass it on as `TransientSinkError.retryAfterMs`; the runner never
 * naks sooner.
 */

/** Headers as Node's http module and fetch expose them. */
export type HeaderSource =
  { get(name: string): string | null } | Record<string, string | string[] | undefined> | undefined;

// IMF-fixdate (`Sun, 06 Nov 1994 08:49:37 GMT`) and the obsolete RFC 850 form both end in GMT;
// without that check Date.parse would read `1.5` or `2027` as a date.
const HTTP_DATE = /^[A-Za-z]{3,9}, [0-9]{2}[ -][A-Za-z]{3}[ -][0-9]{2,4} [0-9]{2}:[0-9]{2}:[0-9]{2} GMT$/;

/**
 * The wait a `Retry-After` value asks for, in ms: delay-seconds, or an HTTP date (0 once it has
 * passed). Undefined when the value is missing or is neither.
 */
export function parseRetryAfter(
  value: string | null | undefined,
  nowMs: number = Date.now(),
): number | undefined {
  const text = value?.trim();
  if (!text) return undefined;
  if (/^[0-9]+$/.test(text)) return Number(text) * 1000;
  if (!HTTP_DATE.test(text)) return undefined;
  const at = Date.parse(text);
  return Number.isNaN(at) ? undefined : Math.max(0, at - nowMs);
}

/** The `Retry-After` of a response's headers, in ms (parseRetryAfter). */
export function retryAfterOf(headers: HeaderSource, nowMs?: number): number | undefined {
  if (!headers) return undefined;
  let value: string | string[] | null | undefined;
  if (typeof headers.get === 'function')
    value = (headers as { get(name: string): string | null }).get('retry-after');
  else {
    const record = headers as Record<string, string | string[] | undefined>;
    const name = Object.keys(record).find((key) => key.toLowerCase() === 'retry-after');
    value = name === undefined ? undefined : record[name];
  }
  return parseRetryAfter(Array.isArray(value) ? value[0] : value, nowMs);
}
