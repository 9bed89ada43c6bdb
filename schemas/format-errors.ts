/**
 * Turns TypeBox validation errors into sentences a person can act on:
 * `telemetry.SoC: expected number, got "87%"`, `status.State: expected one of DISCONNECTED,
 * INITIALIZING, …, got "ON"`, `telemetry.SoC: must be at most 100, got 120`.
 */
import type { TLocalizedValidationError } from 'typebox/error';

type ValidationError = Pick<TLocalizedValidationError, 'keyword' | 'instancePath' | 'params' | 'message'>;

/** How many allowed values an `expected one of` message lists before it abbreviates. */
const MAX_LISTED = 8;

/** Value at a JSON pointer (`/a/0/b`) inside `root`, or undefined. */
function at(root: unknown, pointer: string): unknown {
  if (pointer === '') return root;
  let node: unknown = root;
  for (const raw of pointer.slice(1).split('/')) {
    const key = raw.replace(/~1/g, '/').replace(/~0/g, '~');
    if (node === null || typeof node !== 'object') return undefined;
    node = (node as Record<string, unknown>)[key];
  }
  return node;
}

/** Short, readable rendering of a value for an error message. */
export function show(value: unknown): string {
  if (value === undefined) return 'nothing';
  if (value === null) return 'null';
  if (Array.isArray(value)) return 'an array';
  if (typeof value === 'object') return 'an object';
  if (typeof value === 'number' && !Number.isFinite(value)) return String(value);
  const text = JSON.stringify(value);
  return text.length > 40 ? `${text.slice(0, 37)}...` : text;
}

function pathOf(prefix: string, pointer: string): string {
  const tail = pointer
    .slice(1)
    .split('/')
    .filter((s) => s !== '')
    .map((s) => (/^\d+$/.test(s) ? `[${s}]` : `.${s}`))
    .join('');
  return `${prefix}${tail}`;
}

/** `A or B`, `one of A, B or C`, abbreviated when the list is long (Evt1 has 29 names). */
function oneOf(values: readonly unknown[]): string {
  const shown = values.map((v) => (typeof v === 'string' ? v : JSON.stringify(v)));
  if (shown.length <= 2) return shown.join(' or ');
  if (shown.length > MAX_LISTED)
    return `one of ${shown.slice(0, MAX_LISTED - 2).join(', ')}, … (${shown.length} in all)`;
  return `one of ${shown.slice(0, -1).join(', ')} or ${shown.at(-1)}`;
}

/** Keywords folded into the messages built above rather than reported one by one. */
const STRUCTURAL = new Set(['required', 'anyOf', 'oneOf', 'type', 'enum', 'const']);

/** Range and size keywords, in words. */
function bound(e: ValidationError): string | undefined {
  const limit = (e.params as { limit?: unknown }).limit;
  switch (e.keyword) {
    case 'minimum':
      return `must be at least ${String(limit)}`;
    case 'maximum':
      return `must be at most ${String(limit)}`;
    case 'exclusiveMinimum':
      return `must be greater than ${String(limit)}`;
    case 'exclusiveMaximum':
      return `must be less than ${String(limit)}`;
    case 'minLength':
      return `must be at least ${String(limit)} characters long`;
    case 'maxLength':
      return `must be at most ${String(limit)} characters long`;
    case 'minItems':
      return `must have at least ${String(limit)} items`;
    case 'maxItems':
      return `must have at most ${String(limit)} items`;
    default:
      return undefined;
  }
}

/**
 * One message per problem, deduplicated, `prefix` naming the document (e.g. `telemetry`).
 * Union branches (anyOf) are folded into one message: `expected A or B` for a union of types,
 * `expected one of …` for a union of constants or an enum.
 */
export function formatErrors(prefix: string, value: unknown, errors: Iterable<ValidationError>): string[] {
  const byPath = new Map<string, ValidationError[]>();
  for (const e of errors) {
    const list = byPath.get(e.instancePath) ?? [];
    list.push(e);
    byPath.set(e.instancePath, list);
  }
  const out: string[] = [];
  for (const [pointer, list] of byPath) {
    const actual = at(value, pointer);
    const where = pathOf(prefix, pointer);
    const before = out.length;
    for (const e of list.filter((e) => e.keyword === 'required')) {
      const missing = (e.params as { requiredProperties?: string[] }).requiredProperties ?? [];
      for (const name of missing) out.push(`${pathOf(prefix, `${pointer}/${name}`)}: required, missing`);
    }
    // A fixed set of values (enum keyword, or a union of const branches): name the set.
    const allowed: unknown[] = [];
    for (const e of list) {
      if (e.keyword === 'enum')
        allowed.push(...((e.params as { allowedValues?: unknown[] }).allowedValues ?? []));
      if (e.keyword === 'const') allowed.push((e.params as { allowedValue?: unknown }).allowedValue);
    }
    if (allowed.length > 0) {
      out.push(`${where}: expected ${oneOf([...new Set(allowed)])}, got ${show(actual)}`);
      continue;
    }
    // A range or size failure comes from the branch whose type matched (`ts: -5` is a number below
    // 0, not "expected string"), so it is the more useful message.
    const others = list.filter((e) => !STRUCTURAL.has(e.keyword));
    for (const e of others) out.push(`${where}: ${bound(e) ?? e.message}, got ${show(actual)}`);
    if (others.length > 0) continue;
    const types = list
      .filter((e) => e.keyword === 'type')
      .map((e) => String((e.params as { type?: unknown }).type));
    if (types.length > 0) {
      out.push(`${where}: expected ${[...new Set(types)].join(' or ')}, got ${show(actual)}`);
      continue;
    }
    if (out.length === before && list.some((e) => e.keyword === 'anyOf' || e.keyword === 'oneOf')) {
      out.push(`${where}: matches none of the allowed forms, got ${show(actual)}`);
    }
  }
  return [...new Set(out)];
}
