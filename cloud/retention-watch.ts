/**
 * How close a consumer's unacked messages are to being evicted by its stream's limits. `BSU` keeps
 * messages by age and size (discard old), not until every consumer has them: a consumer stalled
 * long enough loses what it has not taken, with no error anywhere. The watch turns that into
 * figures: the share of each limit what the consumer has not acked takes, an alert above a ratio,
 * and a count of the messages already evicted before the consumer acked them.
 */
import type { JetStreamManager, StreamInfo } from '@nats-io/jetstream';
import { millis } from '@nats-io/transport-node';
import { describeError } from '../lib/errors.ts';
import type { Logger } from '../lib/log.ts';

/** The limits of a stream that evict messages. */
export const RetentionLimit = { messages: 'messages', bytes: 'bytes', age: 'age' } as const;
export type RetentionLimit = (typeof RetentionLimit)[keyof typeof RetentionLimit];

export interface RetentionUse {
  /** Messages of the stream the consumer has not acked (pending + ack pending). */
  unacked: number;
  /** Share of each limit the stream has (only those set) that the unacked messages take. */
  used: Partial<Record<RetentionLimit, number>>;
  /** The largest share: 1 means the next message stored evicts one the consumer has not acked. */
  worst: number;
}

/**
 * Where a consumer stands: from consumer info, or, while messages flow, from its deliveries (consumer
 * info on nats-server 2.9 stalls a filtered consumer's deliveries while it runs).
 */
export interface ConsumerProgress {
  /** Messages not delivered yet. */
  pending: number;
  /** Messages delivered and not acked yet. */
  ackPending: number;
  /** Every stream sequence up to this one is acked. */
  ackFloor: number;
}

/**
 * The use of `stream`'s limits by what a consumer has not acked. `oldestUnackedMs` is the stored
 * time of the first message after the ack floor; bytes are estimated pro rata to the count.
 */
export function retentionUse(
  stream: StreamInfo,
  consumer: ConsumerProgress,
  oldestUnackedMs: number | undefined,
  nowMs: number,
): RetentionUse {
  const { state, config } = stream;
  const unacked = consumer.pending + consumer.ackPending;
  const used: Partial<Record<RetentionLimit, number>> = {};
  if (config.max_msgs > 0) used.messages = unacked / config.max_msgs;
  if (config.max_bytes > 0)
    used.bytes =
      state.messages > 0 ? (state.bytes * Math.min(1, unacked / state.messages)) / config.max_bytes : 0;
  if (config.max_age > 0)
    used.age =
      unacked > 0 && oldestUnackedMs !== undefined ? (nowMs - oldestUnackedMs) / millis(config.max_age) : 0;
  return { unacked, used, worst: Math.max(0, ...Object.values(used)) };
}

export interface RetentionWatchOptions {
  stream: string;
  durable: string;
  /** Alert when the worst share reaches this. */
  alertRatio: number;
  log: Logger;
  /** Called with each sample; `evicted`: messages newly seen evicted unacked since the last one. */
  report: (use: RetentionUse, evicted: number) => void;
}

/** Samples the use of the stream's limits on demand (one stream info, one consumer info, one get). */
export class RetentionWatch {
  /** Evicted sequences up to here are counted. */
  private countedThrough = 0;
  /** The ack floor of the sample before. */
  private ackFloorSeen: number | undefined;
  private alerting = false;

  constructor(
    private readonly jsm: JetStreamManager,
    private readonly o: RetentionWatchOptions,
  ) {}

  /** One sample; `progress` spares the consumer info (see ConsumerProgress). */
  async sample(progress?: ConsumerProgress): Promise<RetentionUse | undefined> {
    try {
      const [stream, consumer] = await Promise.all([
        this.jsm.streams.info(this.o.stream),
        progress ?? this.consumerProgress(),
      ]);
      const oldestSeq = Math.max(consumer.ackFloor + 1, stream.state.first_seq);
      const oldestMs =
        oldestSeq === stream.state.first_seq
          ? Date.parse(stream.state.first_ts)
          : await this.storedAtMs(oldestSeq);
      const use = retentionUse(stream, consumer, oldestMs, Date.now());
      this.report(use, stream.state.first_seq - 1, consumer.ackFloor);
      return use;
    } catch (err) {
      this.o.log.debug({ err: describeError(err) }, 'could not sample the retention use');
      return undefined;
    }
  }

  private async consumerProgress(): Promise<ConsumerProgress> {
    const info = await this.jsm.consumers.info(this.o.stream, this.o.durable);
    return {
      pending: info.num_pending,
      ackPending: info.num_ack_pending,
      ackFloor: info.ack_floor.stream_seq,
    };
  }

  private async storedAtMs(seq: number): Promise<number | undefined> {
    const m = await this.jsm.streams.getMessage(this.o.stream, { seq }).catch(() => null);
    return m ? m.time.getTime() : undefined;
  }

  private report(use: RetentionUse, goneThrough: number, ackFloor: number): void {
    // The server moves the ack floor past the delivered messages it evicts, so the floor of the
    // sample before tells what was acked. The first sample only sets it: what went before this
    // process is not known.
    const before = this.ackFloorSeen ?? Math.max(ackFloor, goneThrough);
    const evicted = Math.max(0, goneThrough - Math.max(before, this.countedThrough));
    this.countedThrough = Math.max(this.countedThrough, goneThrough);
    this.ackFloorSeen = Math.max(before, ackFloor);
    if (evicted > 0)
      this.o.log.error(
        { stream: this.o.stream, evicted, through: goneThrough },
        `${this.o.stream} evicted ${evicted} messages this consumer had not acked: its limits are too small for this lag`,
      );
    const alerting = use.worst >= this.o.alertRatio;
    if (alerting !== this.alerting) {
      const fields = {
        stream: this.o.stream,
        used: use.used,
        unacked: use.unacked,
        alertRatio: this.o.alertRatio,
      };
      if (alerting)
        this.o.log.warn(fields, `unacked messages take ${percent(use.worst)} of ${this.o.stream}'s limits`);
      else
        this.o.log.info(
          fields,
          `unacked messages back under ${percent(this.o.alertRatio)} of ${this.o.stream}'s limits`,
        );
      this.alerting = alerting;
    }
    this.o.report(use, evicted);
  }
}

const percent = (ratio: number): string => `${Math.round(ratio * 100)} %`;
