/**
 * The settings a local stack hands to Switchyard's commands, in one place: `stack up` writes them
 * to `DIR/env/<site>.env` and `DIR/env/cloud.env`, and in-process callers (`npm run dev`, the
 * benchmarks) pass the same values to the processes they start.
 *
 * Keys are the camelCase config properties the commands declare (lib/config.ts), so the variable
 * of `mqttUrl` is `SWITCHYARD_MQTT_URL` here exactly as it is for the command that reads it.
 */
import { envName } from '../lib/config.ts';

/** Fixed values of every local stack: the bucket, database, keys and region its servers use. */
export const LOCAL_STACK = {
  s3Bucket: 'switchyard',
  s3Region: 'us-east-1',
  /** s3rver accepts only these keys. */
  s3AccessKeyId: 'S3RVER',
  s3SecretAccessKey: 'S3RVER',
  influx2Org: 'switchyard',
  influx2Bucket: 'switchyard',
  /** VictoriaMetrics ignores the token; the InfluxDB client requires one. */
  influx2Token: 'local',
  /** Created by the InfluxDB 1.x readiness probe (stack/server-readiness.ts). */
  influx1Database: 'switchyard',
  /** The sink `ingest` writes to by default: the new engine (VictoriaMetrics, v2 API). */
  sink: 'influx2',
} as const;

/**
 * Config keys of a site's edge processes (the bridge, the simulator); `leafCreds` names the file the
 * gateway's nats-server holds for its leaf link.
 */
export const SITE_ENV_KEYS = [
  'site',
  'mqttUrl',
  'mqttUsername',
  'mqttPasswordFile',
  'natsUrl',
  'natsCreds',
  'leafCreds',
  'msgIdKeyFile',
] as const;

/** Config keys of the cloud consumers. */
export const CLOUD_ENV_KEYS = [
  'natsUrl',
  'natsCreds',
  'natsCa',
  'redisUrl',
  'redisUsername',
  'redisPasswordFile',
  's3Endpoint',
  's3Bucket',
  's3Region',
  's3AccessKeyId',
  's3SecretAccessKey',
  'influx2Url',
  'influx2Org',
  'influx2Bucket',
  'influx2Token',
  'influx1Url',
  'influx1Database',
  'sink',
] as const;

export type SiteEnvKey = (typeof SITE_ENV_KEYS)[number];
export type CloudEnvKey = (typeof CLOUD_ENV_KEYS)[number];
export type SiteSettings = Record<SiteEnvKey, string>;
export type CloudSettings = Record<CloudEnvKey, string>;

/** `{ mqttUrl: 'mqtt://…' }` → `{ SWITCHYARD_MQTT_URL: 'mqtt://…' }`, for a child's environment. */
export function toEnv(settings: Readonly<Record<string, string>>): Record<string, string> {
  return Object.fromEntries(Object.entries(settings).map(([key, value]) => [envName(key), value]));
}

// Values that a POSIX shell reads literally without quotes; anything else is single-quoted.
const SHELL_SAFE = /^[A-Za-z0-9_@%+=:,./-]*$/;

/**
 * An env file: plain `KEY=value` lines, so that both `set -a; . FILE` in a shell and dotenv-style
 * readers (docker `--env-file`, systemd `EnvironmentFile=`) take it as is.
 */
export function envFileText(settings: Readonly<Record<string, string>>): string {
  const lines = Object.entries(toEnv(settings)).map(([name, value]) =>
    SHELL_SAFE.test(value) ? `${name}=${value}` : `${name}='${value.replaceAll("'", `'\\''`)}'`,
  );
  return `${lines.join('\n')}\n`;
}
