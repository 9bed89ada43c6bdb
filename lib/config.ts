/**
 * Typed configuration for every command. A command declares one flat TypeBox object schema whose
 * properties carry a `description` and usually a `default`; this module derives from it:
 * - a flag per property (`natsUrl` → `--nats-url`),
 * - an environment variable per property (`natsUrl` → `SWITCHYARD_NATS_URL`),
 * - a key in the optional YAML/JSON file given with `--config FILE`.
 * Precedence: defaults < file < environment < flags. Every problem is reported at once (ConfigError,
 * exit 2).
 *
 * A property marked `secret: true` (a password, a token) gets no flag, since `ps` shows every
 * process's arguments: it comes from the file, from its variable, or from a file named by the
 * variable with `_FILE` appended (`SWITCHYARD_REDIS_PASSWORD_FILE`, e.g. under systemd's
 * `LoadCredential=`), and is never printed.
 */
import { readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { Option, type Command } from 'commander';
import type { Static, TObject, TSchema } from 'typebox';
import { Compile } from 'typebox/compile';
import Value from 'typebox/value';
import { formatErrors } from '../schemas/format-errors.ts';
import { ENV_PREFIX, switchyardEnv } from './env.ts';
import { ConfigError } from './errors.ts';

export const kebab = (key: string): string => key.replace(/[A-Z]/g, (c) => `-${c.toLowerCase()}`);
export const envName = (key: string): string =>
  `${ENV_PREFIX}${key.replace(/[A-Z]/g, (c) => `_${c}`).toUpperCase()}`;
const camel = (key: string): string => key.replace(/[-_]([a-z0-9])/g, (_, c: string) => c.toUpperCase());

interface Described extends TSchema {
  description?: string;
  default?: unknown;
  type?: unknown;
  items?: unknown;
  secret?: boolean;
}

/** Every variable a command with `schema` reads: one per property, and `_FILE` for each secret. */
export const envNames = (schema: TObject): string[] =>
  properties(schema).flatMap(([key, prop]) =>
    prop.secret === true ? [envName(key), `${envName(key)}_FILE`] : [envName(key)],
  );

/** The keys of `schema`'s properties marked `secret: true`. */
export const secretKeys = (schema: TObject): string[] =>
  properties(schema)
    .filter(([, prop]) => prop.secret === true)
    .map(([key]) => key);

const properties = (schema: TObject): [string, Described][] =>
  Object.entries(schema.properties as Record<string, Described>);

/** Adds a flag for every property of `schema`, and `--config FILE`, to `command`. */
export function addConfigOptions(command: Command, schema: TObject): Command {
  for (const [key, prop] of properties(schema)) {
    if (prop.secret === true) continue;
    const isBool = prop.type === 'boolean';
    const flag = isBool ? `--${kebab(key)} [bool]` : `--${kebab(key)} <value>`;
    const hints = [`env ${envName(key)}`];
    if (prop.default !== undefined) hints.push(`default ${JSON.stringify(prop.default)}`);
    command.addOption(new Option(flag, `${prop.description ?? key} (${hints.join(', ')})`));
  }
  command.option(
    '--config <file>',
    'YAML or JSON file with any of the settings above (env SWITCHYARD_CONFIG)',
  );
  return command;
}

export interface ConfigSources {
  /** Parsed flags as commander returns them (camelCase keys; unset flags absent or undefined). */
  flags?: Record<string, unknown>;
  /** Environment; defaults to the process's `SWITCHYARD_*` variables. */
  env?: Record<string, string>;
  /** Path of a YAML/JSON file; defaults to `flags.config` or `SWITCHYARD_CONFIG`. */
  file?: string;
}

// Loaded only when a file is given: a long-running bridge should not carry a YAML parser it never uses.
const parseYaml = (text: string): unknown =>
  (createRequire(import.meta.url)('yaml') as { parse: (text: string) => unknown }).parse(text);

function readFile(path: string, problems: string[]): Record<string, unknown> {
  try {
    const parsed: unknown = parseYaml(readFileSync(path, 'utf8'));
    if (parsed === null || parsed === undefined) return {};
    if (typeof parsed !== 'object' || Array.isArray(parsed)) {
      problems.push(`${path}: expected a mapping of settings`);
      return {};
    }
    return Object.fromEntries(Object.entries(parsed).map(([k, v]) => [camel(k), v]));
  } catch (err) {
    problems.push(`${path}: ${(err as Error).message.split('\n')[0]}`);
    return {};
  }
}

/** Coerces text from flags and environment into the property's type (lists are comma-separated). */
function coerce(prop: Described, value: unknown): unknown {
  if (typeof value !== 'string') return value;
  if (prop.type === 'array') return value === '' ? [] : value.split(',').map((s) => s.trim());
  if (prop.type === 'boolean' && value === '') return true;
  return value;
}

/** A secret from the file its `_FILE` variable names (the last line break dropped). */
function readSecretFile(env: Record<string, string>, key: string, problems: string[]): string | undefined {
  const variable = `${envName(key)}_FILE`;
  const path = env[variable];
  if (path === undefined || path === '') return undefined;
  try {
    return readFileSync(path, 'utf8').replace(/\r?\n$/, '');
  } catch (err) {
    problems.push(`${variable}: cannot read ${path} (${(err as NodeJS.ErrnoException).code ?? 'error'})`);
    return undefined;
  }
}

/** Loads and validates the config of one command; throws ConfigError listing every problem. */
export function loadConfig<T extends TObject>(schema: T, sources: ConfigSources = {}): Static<T> {
  const problems: string[] = [];
  const env = sources.env ?? switchyardEnv();
  const flags = sources.flags ?? {};
  const filePath = sources.file ?? (flags.config as string | undefined) ?? env[`${ENV_PREFIX}CONFIG`];
  const props = new Map(properties(schema));

  const merged: Record<string, unknown> = {};
  if (filePath) {
    for (const [k, v] of Object.entries(readFile(filePath, problems))) {
      if (!props.has(k)) problems.push(`${filePath}: unknown setting "${k}"`);
      else merged[k] = v;
    }
  }
  for (const [key, prop] of props) {
    const fromEnv = env[envName(key)] ?? (prop.secret ? readSecretFile(env, key, problems) : undefined);
    if (fromEnv !== undefined) merged[key] = coerce(prop, fromEnv);
    const fromFlag = flags[key];
    if (fromFlag !== undefined)
      merged[key] = coerce(prop, fromFlag === true && prop.type === 'boolean' ? 'true' : fromFlag);
  }

  const withDefaults = Value.Default(schema, Value.Convert(schema, merged)) as Record<string, unknown>;
  const validator = Compile(schema);
  if (!validator.Check(withDefaults))
    problems.push(
      ...formatErrors('', withDefaults, validator.Errors(withDefaults)).map((m) => m.replace(/^\./, '')),
    );
  if (problems.length > 0) throw new ConfigError(problems);
  return withDefaults as Static<T>;
}
