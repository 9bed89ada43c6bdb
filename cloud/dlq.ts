/**
 * The dead-letter stream. A message a consumer will never write is published here — its payload
 * bytes and headers unchanged, plus why, by whom and where from — and only after the PubAck is the
 * original termed. Dead letters can be counted, inspected and redriven (republished to their
 * original subject) by JetStream sequence.
 *
 * When the stream is full it refuses new dead letters rather than evicting old ones (discard
 * `new`): the consumer then keeps the message in `BSU`, retries it with backoff, logs an error and
 * counts it (`switchyard_consumer_dead_letter_failures_total{cause="full"}`). Nothing is dropped.
 *
 * Layout: stream `BSU_DLQ`, subjects `dlq.>`, a dead letter of consumer `archive` for
 * `bsu.s1.u7.telemetry` is `dlq.archive.bsu.s1.u7.telemetry`. Headers (schemas/headers.ts):
 * `Switchyard-Dlq-Reason` (`<class>: <detail>`), `-Consumer`, `-Stream`, `-Seq` (stream sequence of
 * the original), `-Subject`, `-Deliveries`.
 */
import {
  DiscardPolicy,
  JetStreamApiError,
  RetentionPolicy,
  StorageType,
  type JetStreamClient,
  type JetStreamManager,
  type PubAck,
} from '@nats-io/jetstream';
import { headers, nanos, type MsgHdrs } from '@nats-io/transport-node';
import {
  isStreamNotFound,
  NatsServerErrorCode,
  ReplicasNotSupportedError,
  withReplicaHint,
} from '../lib/nats.ts';
import type { Logger } from '../lib/log.ts';
import { Header } from '../schemas/headers.ts';
import { DLQ_STREAM } from '../schemas/streams.ts';

/** Name of the dead-letter stream (schemas/streams.ts). */
export { DLQ_STREAM };
/** First token of every dead-letter subject. */
export const DLQ_SUBJECT_ROOT = 'dlq';

/** Why a message was dead-lettered: the first word of `Switchyard-Dlq-Reason` and a metric label. */
export const DeadLetterReason = {
  /** The subject is not `bsu.<site>.<device>.<kind>`. */
  badSubject: 'bad-subject',
  /** The sink listed the message in `rejected`. */
  rejected: 'rejected',
  /** The sink threw PermanentSinkError for the batch. */
  permanent: 'permanent',
  /** Delivered `maxDeliver` times without being written. */
  maxDeliveries: 'max-deliveries',
} as const;
export type DeadLetterReason = (typeof DeadLetterReason)[keyof typeof DeadLetterReason];

/** Subject of a dead letter: `dlq.<consumer>.<original subject>`. */
export const dlqSubject = (consumer: string, subject: string): string =>
  `${DLQ_SUBJECT_ROOT}.${consumer}.${subject}`;

/** De-duplication id of a dead letter: one per consumer and original sequence. */
export const dlqMessageId = (consumer: string, seq: number): string => `${consumer}.${seq}`;

export interface DlqStreamOptions {
  stream?: string;
  /** Window in which a second dead letter with the same id is dropped, in ms (default 1 h). */
  duplicateWindowMs?: number;
  /** Beyond this, in bytes, new dead letters are refused (default 1 GiB). */
  maxBytes?: number;
  /**
   * Copies of the stream on a clustered hub (3 in production). Given, an existing stream with
   * another count is changed to it; left out, a new stream has 1 and an existing one keeps its own.
   */
  replicas?: number;
}

/**
 * Creates the dead-letter stream if it is missing. An existing one keeps its limits (an operator
 * may have tuned them), but one that would evict old dead letters to make room is switched to
 * refusing new ones.
 */
export async function ensureDlqStream(
  jsm: JetStreamManager,
  options: DlqStreamOptions = {},
  log?: Logger,
): Promise<void> {
  const name = options.stream ?? DLQ_STREAM;
  try {
    const info = await jsm.streams.info(name);
    const evicts = info.config.discard !== DiscardPolicy.New;
    const replicas = options.replicas ?? info.config.num_replicas;
    if (evicts || replicas !== info.config.num_replicas) {
      await withReplicaHint(
        name,
        'dlqReplicas',
        replicas,
        jsm.streams.update(name, { ...info.config, discard: DiscardPolicy.New, num_replicas: replicas }),
      );
      if (evicts)
        log?.warn(
          { stream: name },
          'dead-letter stream evicted its oldest when full: it now refuses new ones',
        );
      if (replicas !== info.config.num_replicas)
        log?.info(
          { stream: name, from: info.config.num_replicas, to: replicas },
          'dead-letter stream replicas changed',
        );
    }
    return;
  } catch (err) {
    if (!isStreamNotFound(err)) throw err;
  }
  try {
    await withReplicaHint(
      name,
      'dlqReplicas',
      options.replicas ?? 1,
      jsm.streams.add({
        name,
        subjects: [`${DLQ_SUBJECT_ROOT}.>`],
        storage: StorageType.File,
        retention: RetentionPolicy.Limits,
        discard: DiscardPolicy.New,
        max_bytes: options.maxBytes ?? 1024 ** 3,
        duplicate_window: nanos(options.duplicateWindowMs ?? 3_600_000),
        num_replicas: options.replicas ?? 1,
      }),
    );
  } catch (err) {
    if (err instanceof ReplicasNotSupportedError) throw err;
    // Another consumer created it between our info and add.
    await jsm.streams.info(name).catch(() => {
      throw err;
    });
  }
}

/** The dead-letter stream refused a dead letter because it is full (or could not store it). */
export const isDlqFull = (err: unknown): boolean =>
  err instanceof JetStreamApiError && err.code === NatsServerErrorCode.streamStoreFailed;

/** A message to dead-letter, as the runner knows it. */
export interface DeadLetter {
  consumer: string;
  /** Stream the original came from (`BSU`). */
  stream: string;
  /** Stream sequence of the original. */
  seq: number;
  subject: string;
  deliveries: number;
  reason: DeadLetterReason;
  /** One line for a person: what went wrong. */
  detail: string;
  payload: Uint8Array;
  headers: MsgHdrs | undefined;
}

/** Header values are one line of printable text. */
const oneLine = (text: string, max = 1000): string => {
  const flat = text.replace(/[\r\n\t]+/g, ' ').trim();
  return flat.length > max ? `${flat.slice(0, max - 3)}...` : flat;
};

/**
 * Headers of a dead letter: the original's, except JetStream's own `Nats-*` controls (a copied
 * `Nats-Msg-Id` would be taken for a duplicate, `Nats-Expected-*` would make the publish fail),
 * plus the Switchyard-Dlq-* headers.
 */
export function deadLetterHeaders(letter: DeadLetter): MsgHdrs {
  const h = headers();
  if (letter.headers) {
    for (const [key, values] of letter.headers) {
      if (/^nats-/i.test(key)) continue;
      for (const value of values) h.append(key, value);
    }
  }
  h.set(Header.dlqReason, oneLine(`${letter.reason}: ${letter.detail}`));
  h.set(Header.dlqConsumer, letter.consumer);
  h.set(Header.dlqStream, letter.stream);
  h.set(Header.dlqSeq, String(letter.seq));
  h.set(Header.dlqSubject, letter.subject);
  h.set(Header.dlqDeliveries, String(letter.deliveries));
  return h;
}

/**
 * Publishes one dead letter and resolves with the PubAck (a duplicate — the same consumer and
 * sequence dead-lettered again after a lost term — resolves too, with `duplicate: true`).
 * Rejects when the stream did not store it: the caller must not term the original then.
 */
export function publishDeadLetter(
  js: JetStreamClient,
  letter: DeadLetter,
  options: { timeoutMs?: number; msgId?: string } = {},
): Promise<PubAck> {
  return js.publish(dlqSubject(letter.consumer, letter.subject), letter.payload, {
    msgID: options.msgId ?? dlqMessageId(letter.consumer, letter.seq),
    headers: deadLetterHeaders(letter),
    timeout: options.timeoutMs ?? 5_000,
  });
}

/**
 * Publishes a dead letter so that the stream holds it when this resolves. JetStream remembers a
 * message id for the duplicate window even after that message was deleted (a redriven dead
 * letter): a "duplicate" answer whose original is gone is published again under an id of its own.
 */
export async function storeDeadLetter(
  js: JetStreamClient,
  jsm: JetStreamManager,
  dlqStream: string,
  letter: DeadLetter,
): Promise<PubAck> {
  const ack = await publishDeadLetter(js, letter);
  if (!ack.duplicate) return ack;
  const original = await jsm.streams.getMessage(dlqStream, { seq: ack.seq }).catch(() => undefined);
  if (original && original.subject === dlqSubject(letter.consumer, letter.subject)) return ack;
  return publishDeadLetter(js, letter, {
    msgId: `${dlqMessageId(letter.consumer, letter.seq)}.again-${Date.now()}`,
  });
}
