/** Configuration of `switchyard edge` (flags, SWITCHYARD_* environment, or a YAML/JSON file). */
import { hostname } from 'node:os';
import Type, { type Static } from 'typebox';
import { natsAuthOf, natsInsecurities, NatsAuthSchema } from '../lib/nats.ts';
import { serviceProperties } from '../lib/ops.ts';
import { InsecureSchema, isLoopbackUrl } from '../lib/secure.ts';

const GiB = 1024 ** 3;

/**
 * V8 settings the bridge is deployed with (deploy/systemd/switchyard-edge.service): a small young
 * generation and a capped old one keep garbage from piling up on a small gateway; the live heap is
 * bounded by `windowSize` (figures in docs/edge.md).
 */
export const EDGE_NODE_OPTIONS = ['--max-old-space-size=40', '--max-semi-space-size=2'] as const;

/** Settings of the site streams, shared by `switchyard edge` and `switchyard site init`. */
export const SiteStreamConfigSchema = Type.Object({
  site: Type.String({
    pattern: '^[A-Za-z0-9_-]{1,128}$',
    description: 'Site id, one NATS token (e.g. site-1)',
  }),
  natsUrl: Type.String({ default: 'nats://127.0.0.1:4222', description: "The site's nats-server" }),
  telemetryMaxBytes: Type.Integer({
    minimum: 1024 * 1024,
    default: 8 * GiB,
    description: 'Disk budget of the telemetry stream (bytes); oldest telemetry is evicted first',
  }),
  eventsMaxBytes: Type.Integer({
    minimum: 1024 * 1024,
    default: 1 * GiB,
    description: 'Disk budget of the status/events stream (bytes), separate so alarms outlive a flood',
  }),
  invalidMaxBytes: Type.Integer({
    minimum: 1024 * 1024,
    default: 512 * 1024 * 1024,
    description:
      'Disk budget of the stream of payloads kept as invalid (bytes), separate so a flood of garbage evicts only garbage',
  }),
  maxAgeS: Type.Integer({
    minimum: 60,
    default: 30 * 24 * 3600,
    description: 'Oldest message a site stream keeps (s)',
  }),
  duplicateWindowS: Type.Integer({
    minimum: 1,
    default: 900,
    description: 'JetStream de-duplication window (s): a redelivered MQTT message inside it is stored once',
  }),
});
export type SiteStreamConfig = Static<typeof SiteStreamConfigSchema>;

/** `switchyard site init`: the site streams' settings and how to reach the site's nats-server. */
export const SiteInitConfigSchema = Type.Object({
  ...SiteStreamConfigSchema.properties,
  ...NatsAuthSchema.properties,
  ...InsecureSchema.properties,
});

export const EdgeConfigSchema = Type.Object({
  ...SiteInitConfigSchema.properties,
  gateway: Type.String({
    default: hostname(),
    description: 'Name of this gateway, stamped on every message',
  }),
  mqttUrl: Type.String({ default: 'mqtt://127.0.0.1:1883', description: "The site's MQTT broker" }),
  mqttClientId: Type.String({
    default: '',
    description: 'MQTT client id (default switchyard-edge-<site>); fixed, for a persistent session',
  }),
  mqttUsername: Type.String({ default: '', description: 'MQTT user name (empty: anonymous)' }),
  mqttPassword: Type.String({ default: '', secret: true, description: 'MQTT password' }),
  mqttCa: Type.String({
    default: '',
    description: "CA file that signed the broker's certificate (for mqtts:// to another machine)",
  }),
  msgIdKey: Type.String({
    default: '',
    secret: true,
    description:
      "The site's message-id key: makes its message ids unpredictable, so that no other site can suppress its readings at the hub (`switchyard site add` writes one)",
  }),
  topics: Type.Array(Type.String({ minLength: 1 }), {
    minItems: 1,
    default: ['bsu/{device}/{kind}'],
    description: 'MQTT topic patterns with {device} and {kind} (comma-separated)',
  }),
  windowSize: Type.Integer({
    minimum: 1,
    maximum: 65535,
    default: 1000,
    description: 'Messages in flight (received, not yet PUBACKed); a full window pushes back on the broker',
  }),
  maxPayloadBytes: Type.Integer({
    minimum: 64,
    default: 65536,
    description:
      'Larger payloads are kept as invalid, truncated to this size; so is whatever the site server refuses for good',
  }),
  maxClockSkewMs: Type.Integer({
    minimum: 0,
    default: 300_000,
    description: 'A reading stamped further than this ahead of the gateway clock is kept as invalid (ms)',
  }),
  publishTimeoutMs: Type.Integer({
    minimum: 100,
    default: 5000,
    description: 'Wait for a JetStream PubAck (ms)',
  }),
  statsIntervalMs: Type.Integer({
    minimum: 100,
    default: 5000,
    description: 'How often stream depth is sampled (ms)',
  }),
  ...serviceProperties(9460),
});
export type EdgeConfig = Static<typeof EdgeConfigSchema>;

/** Why the bridge's connections are not secure (anonymous, or plain text to another machine). */
export function edgeInsecurities(config: EdgeConfig): string[] {
  const out = natsInsecurities(config.natsUrl, natsAuthOf(config));
  if (!config.msgIdKey)
    out.push(
      "message ids: no key (set SWITCHYARD_MSG_ID_KEY_FILE): another site could suppress this one's readings",
    );
  if (!config.mqttUsername) out.push('MQTT: no user name (set SWITCHYARD_MQTT_USERNAME and _PASSWORD)');
  if (!config.mqttUrl.startsWith('mqtts://') && !isLoopbackUrl(config.mqttUrl))
    out.push(
      `MQTT: ${config.mqttUrl} is plain text to another machine (use mqtts:// with SWITCHYARD_MQTT_CA)`,
    );
  return out;
}
