/**
 * The site broker as a source of messages with at-least-once hand-over.
 *
 * Contract: every QoS 1 message is given to `handler`; its PUBACK goes to the broker only after the
 * handler resolved for it *and* for every message received before it (MQTT requires PUBACKs in
 * receive order). Until then the broker keeps the message in our persistent session. A handler that
 * rejects drops the connection, so the broker redelivers that message and everything after it. At
 * most `windowSize` messages are in flight: a full window stops reading the socket.
 *
 * MQTT.js sends a PUBACK as soon as its message callback returns, which would serialize the bridge
 * on one JetStream round trip per message; so the callback returns at once and the PUBACK it sends
 * is held here (MQTT.js 5's private `_sendPacket`, version pinned) until it may go (docs/edge.md).
 */
import mqtt, { type IPublishPacket, type MqttClient, type Packet } from 'mqtt';
import { formatWithOptions } from 'node:util';
import type { Logger } from '../lib/log.ts';
import { waitUntil, WaitTimeoutError } from '../lib/timers.ts';

export interface MqttSourceOptions {
  url: string;
  /** Fixed client id: the broker keeps the session (subscriptions, queued messages) under it. */
  clientId: string;
  username?: string;
  password?: string;
  /** CA certificate(s) that signed the broker's, for mqtts://. */
  ca?: Buffer;
  /** Subscription filters (QoS 1). */
  filters: string[];
  /** Most messages received and not yet PUBACKed. */
  windowSize: number;
  log: Logger;
  /** Called for each message whose handler rejected or threw (for metrics). */
  onHandlerFailure?: (err: unknown) => void;
}

/**
 * Resolves once the message is safe downstream; the PUBACK follows. Rejecting (or throwing) costs a
 * reconnect: the broker then redelivers this message and every later one not yet acknowledged.
 * A handler that returns nothing instead tells `handOver` itself, once: `done()` or `fail(err)`
 * (no promise per message).
 */
export type MessageHandler = (topic: string, payload: Buffer, handOver: HandOver) => Promise<void> | void;

/** One message received: how its hand-over ended, and its PUBACK once it may go. */
export class HandOver {
  settled = false;
  /** The handler rejected: its PUBACK never goes, the broker redelivers it. */
  failed = false;
  /** The PUBACK MQTT.js wanted to send, held until it may go. */
  puback?: Packet = undefined;

  constructor(
    private readonly source: MqttSource,
    /** The connection it came in on: a PUBACK is only valid on that connection. */
    readonly connection: number,
    readonly topic: string,
    readonly qos: number,
  ) {}

  /** The message is safe downstream: its PUBACK may follow. */
  done(): void {
    if (this.settled || this.failed) return;
    this.settled = true;
    this.source.scheduleDrain();
  }

  /** The message could not be handed over: the broker is to redeliver it. */
  fail(err: unknown): void {
    if (this.settled || this.failed) return;
    this.source.handlerFailed(this, err);
  }
}

type SendPacket = (
  packet: Packet,
  cb?: (err?: Error) => void,
  cbStorePut?: unknown,
  noStore?: boolean,
) => void;
/** The private part of MQTT.js's client this module relies on. */
interface ClientInternals {
  _sendPacket: SendPacket;
}

export class MqttSource {
  private client?: MqttClient;
  private sendPacket?: SendPacket;
  private readonly queue: HandOver[] = [];
  private readonly awaitingPuback = new Map<number, HandOver>();
  private heldCallback: (() => void) | undefined;
  private connection = 0;
  private stopping = false;
  private drainScheduled = false;

  constructor(private readonly options: MqttSourceOptions) {}

  /** Messages received and not yet acknowledged. */
  get inFlight(): number {
    return this.queue.length;
  }

  get connected(): boolean {
    return this.client?.connected ?? false;
  }

  /** Connects, subscribes and starts handing messages to `handler`; resolves once subscribed. */
  async start(handler: MessageHandler): Promise<void> {
    const { log } = this.options;
    const client = mqtt.connect(this.options.url, {
      clientId: this.options.clientId,
      clean: false,
      protocolVersion: 4,
      keepalive: 30,
      reconnectPeriod: 1000,
      connectTimeout: 10_000,
      manualConnect: true,
      resubscribe: true,
      // MQTT.js logs every packet through `debug`, whose rest parameter allocates even when it is
      // off. Its lines go to our log at trace level, or nowhere.
      log: log.isLevelEnabled('trace')
        ? (...args: unknown[]) => log.trace({ mqttjs: formatWithOptions({ breakLength: Infinity }, ...args) })
        : () => undefined,
      ...(this.options.username ? { username: this.options.username, password: this.options.password } : {}),
      ...(this.options.ca ? { ca: this.options.ca } : {}),
    });
    this.client = client;

    const internals = client as unknown as ClientInternals;
    const send = internals._sendPacket.bind(client);
    this.sendPacket = send;
    internals._sendPacket = (packet, cb, cbStorePut, noStore) => {
      if (packet.cmd !== 'puback') return send(packet, cb, cbStorePut, noStore);
      const entry = this.awaitingPuback.get(packet.messageId ?? -1);
      if (entry) {
        this.awaitingPuback.delete(packet.messageId!);
        entry.puback = packet;
      }
      // Either held for later, or belonging to a closed connection: never sent from here.
      cb?.();
      this.scheduleDrain();
    };

    // Installed before connecting: a persistent session's queued messages arrive with the CONNACK.
    client.handleMessage = (packet: IPublishPacket, callback) => {
      // Read before its connection closed, handled after: its PUBACK can no longer go, and the
      // broker redelivers it on the next connection. Handling it would only queue a dead entry.
      if (!client.connected) return callback();
      const entry = new HandOver(this, this.connection, packet.topic, packet.qos);
      if (packet.qos > 0 && packet.messageId !== undefined) {
        this.queue.push(entry);
        this.awaitingPuback.set(packet.messageId, entry);
      }
      try {
        const handedOver = handler(packet.topic, packet.payload as Buffer, entry);
        if (handedOver)
          handedOver.then(
            () => entry.done(),
            (err: unknown) => entry.fail(err),
          );
      } catch (err) {
        // A throw must not reach MQTT.js, which would leave the message neither settled nor failed;
        // told a turn later, as a rejection would be.
        queueMicrotask(() => entry.fail(err));
      }
      if (this.queue.length < this.options.windowSize && !this.stopping) callback();
      else this.heldCallback = callback;
    };

    client.on('close', () => {
      // PUBACKs of this connection can no longer be sent: the broker redelivers those messages.
      this.connection++;
      this.queue.length = 0;
      this.awaitingPuback.clear();
      const held = this.heldCallback;
      this.heldCallback = undefined;
      held?.();
    });
    client.on('error', (err) => log.warn({ err: err.message }, 'mqtt error'));
    client.on('reconnect', () => log.info({ url: this.options.url }, 'mqtt reconnecting'));
    client.on('connect', (connack) =>
      log.info({ url: this.options.url, sessionPresent: connack.sessionPresent }, 'mqtt connected'),
    );

    const connected = new Promise<void>((resolve, reject) => {
      client.once('connect', () => resolve());
      client.once('error', reject);
    });
    client.connect();
    await connected;
    await client.subscribeAsync(
      Object.fromEntries(this.options.filters.map((f) => [f, { qos: 1 as const }])),
    );
    log.info({ filters: this.options.filters }, 'subscribed');
  }

  /**
   * A message the handler could not take stops every later PUBACK (they go in receive order), so
   * waiting would only fill the window. Dropping the connection makes the broker redeliver it and
   * everything after it, in order; what was stored already is stored once, by its message id.
   */
  handlerFailed(entry: HandOver, err: unknown): void {
    entry.failed = true;
    this.options.onHandlerFailure?.(err);
    const { log } = this.options;
    const topic = entry.topic;
    if (entry.qos === 0) {
      log.warn({ err, topic }, 'QoS 0 message not handed over: the broker does not redeliver it');
    } else if (this.stopping || entry.connection !== this.connection) {
      // Stopping ends the connection anyway; an older connection's messages are redelivered already.
      log.warn({ err, topic }, 'message not handed over; the broker will redeliver it');
    } else {
      log.warn({ err, topic }, 'message not handed over: reconnecting so the broker redelivers it');
      this.client?.stream.destroy();
    }
  }

  /**
   * Drains once the current burst is handled: JetStream's PubAcks arrive many per socket read and
   * settle their messages one promise at a time; draining after all of them sends their PUBACKs in
   * one write instead of one write (and one broker read) each.
   */
  scheduleDrain(): void {
    if (this.drainScheduled) return;
    this.drainScheduled = true;
    process.nextTick(() => {
      this.drainScheduled = false;
      this.drain();
    });
  }

  /** Sends the PUBACKs that may go now, in receive order, and resumes reading if there is room. */
  private drain(): void {
    const stream = (this.client as unknown as { stream?: { cork(): void; uncork(): void } } | undefined)
      ?.stream;
    stream?.cork();
    while (this.queue.length > 0) {
      const head = this.queue[0]!;
      if (!head.settled || !head.puback) break;
      this.queue.shift();
      if (head.connection === this.connection && this.client?.connected) this.sendPacket?.(head.puback);
    }
    stream?.uncork();
    if (this.heldCallback && !this.stopping && this.queue.length < this.options.windowSize) {
      const held = this.heldCallback;
      this.heldCallback = undefined;
      held();
    }
  }

  /**
   * Stops reading, waits (up to `timeoutMs`) until every message in hand is handed over and
   * acknowledged, then disconnects. A message read but not acknowledged is redelivered by the broker
   * on the next start (and stored once, by its message id).
   */
  async stop(timeoutMs = 10_000): Promise<void> {
    const client = this.client;
    if (!client) return;
    this.stopping = true;
    await waitUntil(
      'the messages in hand to be handed over',
      () => this.queue.every((e) => e.settled || e.failed),
      { timeoutMs, everyMs: 20 },
    ).catch((err: unknown) => {
      if (!(err instanceof WaitTimeoutError)) throw err;
      this.options.log.warn({ inFlight: this.queue.length }, 'stopping with messages not handed over');
    });
    this.drain();
    await client.endAsync();
  }
}
