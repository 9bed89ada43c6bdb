/**
 * Filter subjects of a durable consumer. nats-server 2.10 and later take several filters
 * (`filter_subjects`); 2.9 takes one (`filter_subject`). On 2.9 the runner asks the server for the
 * narrowest single filter that covers them all and drops the rest itself (it acks them unwritten).
 */
import { UsageError } from '../lib/errors.ts';

/** Does NATS subject `subject` match `filter` (`*` one token, `>` one or more trailing tokens)? */
export const subjectMatches = (filter: string, subject: string): boolean =>
  tokensMatch(filter.split('.'), subject.split('.'));

/** Does a subject match any of `filters`? Each filter is split once, here, not per subject. */
export function subjectMatcher(filters: readonly string[]): (subject: string) => boolean {
  const split = filters.map((f) => f.split('.'));
  return (subject) => {
    const s = subject.split('.');
    return split.some((f) => tokensMatch(f, s));
  };
}

function tokensMatch(f: readonly string[], s: readonly string[]): boolean {
  for (let i = 0; i < f.length; i++) {
    const token = f[i];
    if (token === '>') return s.length > i;
    if (i >= s.length) return false;
    if (token !== '*' && token !== s[i]) return false;
  }
  return f.length === s.length;
}

/**
 * One filter that covers every one of `filters`: token by token, equal tokens are kept and
 * differing ones become `*` when all filters have the same length; otherwise the common leading
 * tokens followed by `>`. Throws UsageError when they share no leading token (that would read the
 * whole stream and discard most of it: configure separate consumers instead).
 */
export function coveringFilter(filters: readonly string[]): string {
  if (filters.length === 0) throw new UsageError('filterSubjects: give at least one subject filter');
  if (filters.length === 1) return filters[0]!;
  const split = filters.map((f) => f.split('.'));
  const length = split[0]!.length;
  const sameShape = split.every((t) => t.length === length && !t.includes('>'));
  if (sameShape) {
    const merged = split[0]!.map((token, i) => (split.every((t) => t[i] === token) ? token : '*'));
    if (merged[0] !== '*') return merged.join('.');
  }
  const prefix: string[] = [];
  for (let i = 0; ; i++) {
    const token = split[0]![i];
    if (token === undefined || token === '>' || token === '*') break;
    if (!split.every((t) => t[i] === token && i < t.length - 1)) break;
    prefix.push(token);
  }
  if (prefix.length === 0)
    throw new UsageError(
      `filterSubjects ${filters.join(', ')} share no leading token: this nats-server takes one filter per consumer, run one consumer per filter`,
    );
  return [...prefix, '>'].join('.');
}

/** Does the server take `filter_subjects` (nats-server 2.10 or later)? */
export function supportsMultipleFilters(serverVersion: string | undefined): boolean {
  const m = /^v?(\d+)\.(\d+)/.exec(serverVersion ?? '');
  if (!m) return false;
  const [major, minor] = [Number(m[1]), Number(m[2])];
  return major > 2 || (major === 2 && minor >= 10);
}

/** What to ask the server for, and which subjects the runner must drop itself. */
export interface ConsumerFilter {
  /** `filter_subject` or `filter_subjects` for the consumer config. */
  server: { filter_subject: string } | { filter_subjects: string[] };
  /** When set, a message whose subject this refuses (it matches no filter) is acked unwritten. */
  clientSide?: (subject: string) => boolean;
}

export function consumerFilter(
  filters: readonly string[],
  serverVersion: string | undefined,
): ConsumerFilter {
  if (filters.length === 1) return { server: { filter_subject: filters[0]! } };
  if (supportsMultipleFilters(serverVersion)) return { server: { filter_subjects: [...filters] } };
  const covering = coveringFilter(filters);
  return { server: { filter_subject: covering }, clientSide: subjectMatcher(filters) };
}
