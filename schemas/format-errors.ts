/**
 * Turns TypeBox validation errors into sentences a person can act on:
 * `telemetry.SoC: expected number, got "87%"`.
 */
import type { TLocalizedValidationError } from 'typebox/error';

type ValidationError = Pick<TLocalizedValidationError, 'keyword' | 'instancePath' | 'params' | 'message'>;

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

/**
 * One message per problem, deduplicated, `prefix` naming the document (e.g. `telemetry`).
 * Union branches (anyOf) are folded into one `expected A or B` message.
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
    const required = list.filter((e) => e.keyword === 'required');
    for (const e of required) {
      const missing = (e.params as { requiredProperties?: string[] }).requiredProperties ?? [];
      for (const name of missing) out.push(`${pathOf(prefix, `${pointer}/${name}`)}: required, missing`);
    }
    const types = list
      .filter((e) => e.keyword === 'type')
      .map((e) => String((e.params as { type?: unknown }).type));
    if (types.length > 0) {
      out.push(
        `${pathOf(prefix, pointer)}: expected ${[...new Set(types)].join(' or ')}, got ${show(actual)}`,
      );
      continue;
    }
    for (const e of list) {
      if (e.keyword === 'required' || e.keyword === 'anyOf' || e.keyword === 'oneOf') continue;
      out.push(`${pathOf(prefix, pointer)}: ${e.message}, got ${show(actual)}`);
    }
    if (out.length === 0 && list.some((e) => e.keyword === 'anyOf' || e.keyword === 'oneOf')) {
      out.push(`${pathOf(prefix, pointer)}: matches none of the allowed forms, got ${show(actual)}`);
    }
  }
  return [...new Set(out)];
}
