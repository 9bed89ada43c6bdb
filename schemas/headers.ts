/**
 * NATS headers on stream messages. The payload stays exactly as the device sent it; everything
 * the bridge knows about a message travels here.
 */
export const Header = {
  /** JetStream de-duplication id: `<site>.<device>.<kind>.<seq>.<device time ms>` (docs/edge.md). */
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
 * Deterministic message id: a redelivered MQTT message maps to the same id and is stored once.
 * Device time is part of it because a device's `seq` counter restarts when the device reboots.
 */
export const messageId = (
  site: string,
  device: string,
  kind: string,
  seq: number,
  deviceTimeMs: number,
): string => `${site}.${device}.${kind}.${seq}.${deviceTimeMs}`;
