/**
 * The one place that reads the process environment. Everything else receives values through typed
 * config (lib/config.ts), so that a command's inputs are visible in its schema.
 */
export const ENV_PREFIX = 'SWITCHYARD_';

/** A copy of the environment variables that start with `SWITCHYARD_`. */
export function switchyardEnv(env: NodeJS.ProcessEnv = process.env): Record<string, string> {
  const out: Record<string, string> = {};
  for (const [k, v] of Object.entries(env)) if (k.startsWith(ENV_PREFIX) && v !== undefined) out[k] = v;
  return out;
}

/** The environment for a child process: the parent's, with `overrides` on top. */
export function childEnv(overrides: Record<string, string> = {}): NodeJS.ProcessEnv {
  return { ...process.env, ...overrides };
}

/** True when running under CI (`CI=true`). */
export const isCI = (): boolean => process.env.CI === 'true' || process.env.CI === '1';

/** Path of a binary override, e.g. `SWITCHYARD_BIN_NATS_SERVER=/opt/nats-server`. */
export const binOverride = (name: string): string | undefined =>
  process.env[`${ENV_PREFIX}BIN_${name.toUpperCase().replace(/[^A-Z0-9]/g, '_')}`];
