/**
 * The edge bridge: site MQTT broker → the site's JetStream streams.
 *
 * Every message the broker delivers is stored exactly once in the site's streams, and the broker
 * gets its PUBACK only after JetStream's PubAck. A valid reading keeps its bytes untouched on
 * `bsu.<site>.<device>.<kind>`; a payload that fails validation is kept byte for byte on
 * `bsu.<site>.<device>.invalid` with the reason, its size and sha256 in headers, truncated to
 * `maxPayloadBytes`, and counted. So is whatever the site server refuses for good; what cannot be
 * kept even so is counted, logged and acknowledged. Bad input never stops the bridge.
 */
import { createHash } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { jetstreamManager, type JetStreamManager } from '@nats-io/jetstream';
import type { MsgHdrs, NatsConnection } from '@nats-io/transport-node';
import { Counter, Gauge, Histogram, type Registry } from 'prom-client';
import type { Logger } from '../lib/log.ts';
import { LabelledCount } from '../lib/metrics.ts';
import { connectNats, encodedHeaders, headerValue, natsAuthOf, wireHeaders } from '../lib/nats.ts';
import type { Readiness } from '../lib/ops.ts';
import {
  decodePayload,
  Header,
  InvalidReason,
  isValidId,
  MessageKind,
  messageId,
  messageIdScope,
  schemaTag,
  subjectFor,
  DEVICE_KINDS,
  type DeviceKind,
} from '../schemas/index.ts';
import { siteStreamNames } from '../schemas/streams.ts';
import type { EdgeConfig } from './config.ts';
import { AsyncPublisher, type JetStreamPublishError } from './async-publisher.ts';
import { MqttSource, type HandOver } from './mqtt-source.ts';
import {
  OrderedPublisher,
  type PublishCallbacks,
  type Published,
  type PublishRequest,
} from './ordered-publisher.ts';
import { checkStreamBudgets, ensureSiteStreams } from './site-streams.ts';
import { TopicMapper } from './topics.ts';

/** Device id used when the topic's device level is not a usable id. */
export const UNKNOWN_DEVICE = '_unknown';

/** Room left under the server's max_payload for the headers the bridge adds to a kept payload. */
export const HEADER_ROOM_BYTES = 4096;

/** The MQTT message as received, with what the bridge made of its topic. */
interface Source {
  topic: string;
  received: Buffer;
  receivedAtMs: number;
  device: string;
  claimedKind: string;
  /** Told once the message is stored (or dropped), so that its PUBACK may go. */
  handOver: HandOver | undefined;
}

/** A message ready to publish, with what keeping it as invalid instead would need. */
class Prepared implements PublishRequest, Source {
  constructor(
    readonly subject: string,
    readonly payload: Uint8Array,
    readonly headers: MsgHdrs,
    readonly kind: MessageKind,
    readonly topic: string,
    readonly received: Buffer,
    readonly receivedAtMs: number,
    readonly device: string,
    readonly claimedKind: string,
    public handOver: HandOver | undefined,
  ) {}
}

/** Why a payload is kept as invalid: the text stored with it and the metric label. */
interface Invalidity {
  reason: string;
  label: InvalidReason;
}

export class EdgeMetrics {
  readonly received: LabelledCount;
  readonly published: LabelledCount;
  readonly invalid: LabelledCount;
  readonly dropped: LabelledCount;
  readonly duplicates: Counter;
  readonly publishRetries: Counter;
  readonly handOverFailures: Counter;
  readonly publishSeconds: Histogram;
  readonly streamMessages: Gauge<'stream'>;
  readonly streamBytes: Gauge<'stream'>;
  readonly streamBudgetBytes: Gauge<'stream'>;
  readonly streamOldestAgeSeconds: Gauge<'stream'>;
  readonly streamEvicted: Gauge<'stream'>;

  constructor(registry: Registry, inFlight: () => number) {
    const registers = [registry];
    this.received = new LabelledCount({
      name: 'switchyard_edge_received_total',
      help: 'MQTT messages received, by the kind their topic names',
      labelName: 'kind',
      registry,
    });
    this.published = new LabelledCount({
      name: 'switchyard_edge_published_total',
      help: 'Messages stored in the site streams (PubAck received), by stored kind',
      labelName: 'kind',
      registry,
    });
    this.invalid = new LabelledCount({
      name: 'switchyard_edge_invalid_total',
      help: 'Payloads kept aside as kind invalid, by reason',
      labelName: 'reason',
      registry,
    });
    this.dropped = new LabelledCount({
      name: 'switchyard_edge_dropped_total',
      help: 'Messages the site server refused for good even as invalid: acknowledged and not stored, by reason',
      labelName: 'reason',
      registry,
    });
    this.duplicates = new Counter({
      name: 'switchyard_edge_duplicates_total',
      help: 'Publishes JetStream recognised as already stored (redelivered MQTT messages)',
      registers,
    });
    this.publishRetries = new Counter({
      name: 'switchyard_edge_publish_retries_total',
      help: 'Failed JetStream publish attempts (retried)',
      registers,
    });
    this.handOverFailures = new Counter({
      name: 'switchyard_edge_handover_failures_total',
      help: 'Messages the bridge failed to hand over; each drops the MQTT connection so the broker redelivers',
      registers,
    });
    this.publishSeconds = new Histogram({
      name: 'switchyard_edge_publish_seconds',
      help: 'From MQTT receipt to JetStream PubAck',
      buckets: [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 5, 30],
      registers,
    });
    new Gauge({
      name: 'switchyard_edge_in_flight',
      help: 'Messages received and not yet stored in JetStream',
      registers,
      collect() {
        this.set(inFlight());
      },
    });
    const streamGauge = (name: string, help: string): Gauge<'stream'> =>
      new Gauge({ name, help, labelNames: ['stream'], registers });
    this.streamMessages = streamGauge('switchyard_edge_stream_messages', 'Messages held in the site stream');
    this.streamBytes = streamGauge('switchyard_edge_stream_bytes', 'Bytes held in the site stream');
    this.streamBudgetBytes = streamGauge(
      'switchyard_edge_stream_budget_bytes',
      'Disk budget of the site stream',
    );
    this.streamOldestAgeSeconds = streamGauge(
      'switchyard_edge_stream_oldest_age_seconds',
      'Age of the oldest message the site stream holds',
    );
    this.streamEvicted = streamGauge(
      'switchyard_edge_stream_evicted_messages',
      'Messages the site stream dropped to stay within its budget or age (oldest first)',
    );
  }
}

export interface EdgeBridgeOptions {
  config: EdgeConfig;
  log: Logger;
  registry: Registry;
}

export class EdgeBridge {
  readonly metrics: EdgeMetrics;
  private readonly topics: TopicMapper;
  private readonly stopController = new AbortController();
  private nc?: NatsConnection;
  private jsm?: JetStreamManager;
  private source?: MqttSource;
  private publisher?: OrderedPublisher<Prepared>;
  private asyncPublisher?: AsyncPublisher;
  private statsTimer?: NodeJS.Timeout;
  private inFlight = 0;
  /** The first part of every message id of this site (schemas/headers.ts). */
  private readonly idScope: string;
  /** The headers of a valid reading up to its receipt time: they are the same on every one. */
  private readonly readingHead: string;
  /** Per device kind, the header text from the end of the topic to the message id. */
  private readonly kindLines: Record<DeviceKind, string>;
  /** The last receipt time formatted, and its ISO-8601 text: many messages share a millisecond. */
  private receivedAtMs = NaN;
  private receivedAtIso = '';
  /** What the publisher tells of each message, for every message. */
  private readonly answers: PublishCallbacks<Prepared> = {
    published: (ack) => this.published(ack),
    stopped: (err, request) => {
      this.inFlight--;
      request.handOver?.fail(err);
    },
  };

  constructor(private readonly options: EdgeBridgeOptions) {
    const { config } = options;
    this.idScope = messageIdScope(config.site, config.msgIdKey);
    this.metrics = new EdgeMetrics(options.registry, () => this.inFlight);
    this.topics = new TopicMapper(config.topics);
    // The same text wireHeaders writes for commonHeaders(), the schema tag and the message id.
    this.readingHead =
      `NATS/1.0\r\n${Header.site}: ${headerValue(config.site)}\r\n` +
      `${Header.gateway}: ${headerValue(config.gateway)}\r\n${Header.receivedAt}: `;
    this.kindLines = Object.fromEntries(
      DEVICE_KINDS.map((kind) => [
        kind,
        `\r\n${Header.schema}: ${headerValue(schemaTag(kind))}\r\n${Header.msgId}: `,
      ]),
    ) as Record<DeviceKind, string>;
  }

  /**
   * Connects to JetStream, checks the budgets fit, creates or updates the site streams, then starts
   * taking messages. When any step fails, closes what it opened before rethrowing, so that nothing
   * keeps the process alive.
   */
  async start(): Promise<void> {
    try {
      await this.startSteps();
    } catch (err) {
      await this.close(true);
      throw err;
    }
  }

  private async startSteps(): Promise<void> {
    const { config, log } = this.options;
    this.nc = await connectNats({
      url: config.natsUrl,
      name: `switchyard-edge-${config.site}`,
      auth: natsAuthOf(config),
    });
    this.jsm = await jetstreamManager(this.nc);
    await checkStreamBudgets(this.jsm, config);
    const streams = await ensureSiteStreams(this.jsm, config);
    log.info({ streams: Object.values(streams).map((s) => s.config.name) }, 'site streams ready');

    this.asyncPublisher = new AsyncPublisher(this.nc, config.publishTimeoutMs);
    this.publisher = new OrderedPublisher<Prepared>(this.asyncPublisher, {
      log,
      signal: this.stopController.signal,
      onRetry: () => this.metrics.publishRetries.inc(),
      // Refused for good (larger than a stream's max_msg_size, …): a reading is kept as invalid.
      onRefused: (request, err) =>
        request.kind === MessageKind.invalid
          ? undefined
          : this.keepInvalid(request, {
              reason: `refused by the site server: ${err.message}`,
              label: InvalidReason.refused,
            }),
      onDropped: (request, err) => this.dropped(request, err),
    });
    await this.sampleStreams();
    this.statsTimer = setInterval(() => void this.sampleStreams(), config.statsIntervalMs);
    this.statsTimer.unref();

    this.source = new MqttSource({
      url: config.mqttUrl,
      clientId: config.mqttClientId || `switchyard-edge-${config.site}`,
      ...(config.mqttUsername ? { username: config.mqttUsername, password: config.mqttPassword } : {}),
      ...(config.mqttCa ? { ca: readFileSync(config.mqttCa) } : {}),
      filters: this.topics.filters,
      windowSize: config.windowSize,
      log,
      onHandlerFailure: () => this.metrics.handOverFailures.inc(),
    });
    await this.source.start((topic, payload, handOver) => this.handle(topic, payload, handOver));
  }

  /**
   * Hands one MQTT message over to JetStream; `handOver` is told once it is stored. What throws here
   * the source turns into a redelivery.
   */
  private handle(topic: string, payload: Buffer, handOver: HandOver): void {
    // Everything derived from the payload (its parsed JSON above all) is dropped before the wait for
    // the PubAck, so messages in flight hold little more than their bytes.
    const request = this.prepare(topic, payload, Date.now());
    request.handOver = handOver;
    this.inFlight++;
    this.publisher!.submit(request, this.answers);
  }

  /** A message stored (or dropped as refused for good): counted, and its PUBACK may go. */
  private published(ack: Published<Prepared>): void {
    this.inFlight--;
    const request = ack.request;
    if (!ack.dropped) {
      if (ack.duplicate) this.metrics.duplicates.inc();
      else this.metrics.published.add(request.kind);
      this.metrics.publishSeconds.observe((Date.now() - request.receivedAtMs) / 1000);
    }
    request.handOver?.done();
  }

  /**
   * Validates a message and builds what is published: subject, headers, stored kind (its hand-over
   * is attached by the caller).
   */
  private prepare(topic: string, payload: Buffer, receivedAtMs: number): Prepared {
    const { config } = this.options;
    const route = this.topics.match(topic);
    const claimedKind = route?.kind ?? 'unknown';
    this.metrics.received.add(claimedKind);
    let device = route?.device ?? UNKNOWN_DEVICE;
    let invalid: Invalidity | undefined;
    if (!isValidId(device)) {
      invalid = {
        reason: `device id ${JSON.stringify(device)} is not usable: use letters, digits, - and _`,
        label: InvalidReason.badDeviceId,
      };
      device = UNKNOWN_DEVICE;
    }
    const decoded = invalid
      ? undefined
      : decodePayload(claimedKind, payload, { maxBytes: config.maxPayloadBytes });
    if (decoded && !decoded.ok) invalid = { reason: decoded.reason, label: decoded.code };
    if (decoded?.ok && decoded.tsMs > receivedAtMs + config.maxClockSkewMs) {
      const aheadS = Math.round((decoded.tsMs - receivedAtMs) / 1000);
      invalid = {
        reason: `${claimedKind}.ts: device clock is ${aheadS} s ahead of the gateway (limit ${config.maxClockSkewMs / 1000} s)`,
        label: InvalidReason.clockSkew,
      };
    }

    if (!decoded?.ok || invalid)
      return this.keepInvalid(
        { topic, received: payload, receivedAtMs, device, claimedKind, handOver: undefined },
        invalid!,
      );
    const kind = decoded.kind;
    // What wireHeaders writes for commonHeaders() followed by the schema tag and the message id
    // (messageId()), in one string: the constant parts are made once, in the constructor.
    const headers =
      this.readingHead +
      this.isoTime(receivedAtMs) +
      `\r\n${Header.mqttTopic}: ` +
      headerValue(topic) +
      this.kindLines[kind] +
      headerValue(messageId(this.idScope, device, kind, decoded.seq, decoded.tsMs)) +
      '\r\n\r\n';
    return new Prepared(
      subjectFor(config.site, device, kind),
      payload,
      encodedHeaders(Buffer.from(headers)),
      kind,
      topic,
      payload,
      receivedAtMs,
      device,
      claimedKind,
      undefined,
    );
  }

  /** Headers every stored message carries: site, gateway, receipt time, MQTT topic. */
  private commonHeaders(topic: string, receivedAtMs: number): [string, string][] {
    const { config } = this.options;
    return [
      [Header.site, config.site],
      [Header.gateway, config.gateway],
      [Header.receivedAt, this.isoTime(receivedAtMs)],
      [Header.mqttTopic, topic],
    ];
  }

  /** `new Date(ms).toISOString()`, kept for the last millisecond asked. */
  private isoTime(ms: number): string {
    if (ms !== this.receivedAtMs) {
      this.receivedAtIso = new Date(ms).toISOString();
      this.receivedAtMs = ms;
    }
    return this.receivedAtIso;
  }

  /**
   * The invalid message kept for a payload, counted: its size and sha256 in headers, its bytes
   * truncated to `maxPayloadBytes` (and under the server's max_payload), so that evidence never
   * stalls the site.
   */
  private keepInvalid(source: Source, why: Invalidity): Prepared {
    const { config } = this.options;
    const { topic, received } = source;
    this.metrics.invalid.add(why.label);
    const serverMax = this.nc?.info?.max_payload ?? Number.POSITIVE_INFINITY;
    const keepBytes = Math.max(0, Math.min(config.maxPayloadBytes, serverMax - HEADER_ROOM_BYTES));
    const sha256 = createHash('sha256').update(received).digest('hex');
    // Byte-identical evidence on the same topic is the same evidence: a redelivery is stored once.
    const digest = createHash('sha256').update(topic).update('\0').update(received).digest('base64url');
    const h = this.commonHeaders(topic, source.receivedAtMs);
    h.push(
      [Header.invalidReason, why.reason],
      [Header.claimedKind, source.claimedKind],
      [Header.originalSize, String(received.length)],
      [Header.payloadSha256, sha256],
      [Header.msgId, `${this.idScope}.invalid.${digest}`],
    );
    return new Prepared(
      subjectFor(config.site, source.device, MessageKind.invalid),
      received.length > keepBytes ? received.subarray(0, keepBytes) : received,
      wireHeaders(h),
      MessageKind.invalid,
      topic,
      received,
      source.receivedAtMs,
      source.device,
      source.claimedKind,
      source.handOver,
    );
  }

  /** A message refused for good even as invalid: counted and logged (never its payload), then acknowledged. */
  private dropped(request: Prepared, err: JetStreamPublishError): void {
    const reason = typeof err.code === 'number' ? `jetstream_${err.code}` : err.code;
    this.metrics.dropped.add(reason);
    this.options.log.warn(
      { subject: request.subject, bytes: request.payload.length, err: err.message },
      'message refused by the site server even as invalid: dropped',
    );
  }

  /** Samples depth, age and evictions of the site streams into the metrics. */
  private async sampleStreams(): Promise<void> {
    if (!this.jsm) return;
    const names = siteStreamNames(this.options.config.site);
    for (const stream of Object.values(names)) {
      try {
        const { state, config } = await this.jsm.streams.info(stream);
        this.metrics.streamMessages.set({ stream }, state.messages);
        this.metrics.streamBytes.set({ stream }, state.bytes);
        this.metrics.streamBudgetBytes.set({ stream }, config.max_bytes);
        const firstMs = state.messages > 0 ? Date.parse(state.first_ts) : Date.now();
        this.metrics.streamOldestAgeSeconds.set({ stream }, Math.max(0, (Date.now() - firstMs) / 1000));
        // Nothing else deletes from a site stream: every sequence before the first was evicted.
        this.metrics.streamEvicted.set({ stream }, Math.max(0, state.first_seq - 1));
      } catch (err) {
        this.options.log.debug({ err: (err as Error).message, stream }, 'stream info unavailable');
      }
    }
  }

  readiness(): Readiness {
    const reasons: string[] = [];
    if (!this.source?.connected) reasons.push('MQTT broker not connected');
    if (!this.nc || this.nc.isClosed()) reasons.push('NATS not connected');
    if (this.publisher?.degraded) reasons.push('JetStream is not storing messages: retrying');
    return reasons.length ? { ready: false, reasons } : { ready: true };
  }

  /** Stops reading, settles the messages in hand, then closes both connections. */
  async stop(): Promise<void> {
    await this.source?.stop();
    await this.close(false);
  }

  private async close(stopSource: boolean): Promise<void> {
    clearInterval(this.statsTimer);
    this.stopController.abort();
    this.asyncPublisher?.close();
    if (stopSource) await this.source?.stop(1000).catch(() => undefined);
    if (this.nc && !this.nc.isClosed()) await this.nc.drain().catch(() => this.nc?.close());
  }
}
