/**
 * NATS headers on stream messages. The payload stays exactly as the device sent it; everything
 * the bridge knows about a message travels here.
 */
import { createHmac } from 'node:crypto';

export const Header = {
  /** JetStream de-duplication id: `<scope>.<device>.<kind>.<seq>.<device time ms>` (docs/edge.md). */
  msgId: 'Nats-Msg-Id',
  site: 'Switchyard-Site',
  gateway: 'Switchyard-Gateway',
  /** When the bridge received the MQTT message, ISO-8601 UTC. */
  receivedAt: 'Switchyard-Received-At',
  mqttTopic: 'Switchyard-Mqtt-Topic',
  /** `<kind>/<version>` of the schema that validated the payload, e.g. `telemetry/1`. */
  schema: 'Switchyard-Schema',
  /** Only on kind `invalid`: why the payload was kept aside. */
  invalidReason: 'Switchyard-Invalid-Reason',
  /** Only on kind `invalid`: the kind the topic claimed (may itself be unknown). */
  claimedKind: 'Switchyard-Claimed-Kind',
  /** Only on kind `invalid`: the size of the payload as sent (bytes); the stored one may be truncated. */
  originalSize: 'Switchyard-Original-Size',
  /** Only on kind `invalid`: sha256 (hex) of the payload as sent, whole. */
  payloadSha256: 'Switchyard-Payload-Sha256',

  /** Dead-letter headers (stream BSU_DLQ). */
  dlqReason: 'Switchyard-Dlq-Reason',
  dlqConsumer: 'Switchyard-Dlq-Consumer',
  dlqStream: 'Switchyard-Dlq-Stream',
  dlqSeq: 'Switchyard-Dlq-Seq',
  dlqSubject: 'Switchyard-Dlq-Subject',
  dlqDeliveries: 'Switchyard-Dlq-Deliveries',
} as const;
export type Header = (typeof Header)[keyof typeof Header];

/**
 * The scope of a site's message ids: the site, tagged with a keyed hash when the site has a
 * message-id key. The hub de-duplicates across every site, so ids another site can predict would let
 * it suppress this site's readings by sending their ids first; with the tag it cannot know them.
 */
export function messageIdScope(site: string, key: string): string {
  if (!key) return site;
  return `${site}~${createHmac('sha256', key).update(site).digest('base64url').slice(0, 22)}`;
}

/**
 * Deterministic message id: a redelivered MQTT message maps to the same id and is stored once.
 * Device time is part of it because a device's `seq` counter restarts when the device reboots.
 * `scope` is `messageIdScope(site, key)`.
 */
export const messageId = (
  scope: string,
  device: string,
  kind: string,
  seq: number,
  deviceTimeMs: number,
): string => `${scope}.${device}.${kind}.${seq}.${deviceTimeMs}`;
