/**
 * The durable pull consumer behind each consumer process: created on first start, brought back to
 * the configured ack settings and filter on every start after that.
 */
import {
  AckPolicy,
  DeliverPolicy,
  JetStreamApiCodes,
  JetStreamApiError,
  type ConsumerConfig,
  type ConsumerInfo,
  type JetStreamManager,
} from '@nats-io/jetstream';
import { nanos } from '@nats-io/transport-node';
import { UsageError } from '../lib/errors.ts';
import type { Logger } from '../lib/log.ts';
import type { ConsumerFilter } from './runner-filters.ts';

/** The durable exists with settings the runner cannot change (e.g. a push consumer). */
export class ConsumerConfigError extends UsageError {
  override name = 'ConsumerConfigError';
}

/** The durable is missing because an operator is moving it (switchyard replay --consumer): wait. */
export class DurableMovingError extends Error {
  override name = 'DurableMovingError';
}

export interface DurableSpec {
  stream: string;
  durable: string;
  ackWaitMs: number;
  maxAckPending: number;
  filter: ConsumerFilter;
  /** Whether a move of the durable is in progress (cloud/control.ts); a missing durable is then not created. */
  isMoving?: () => Promise<boolean>;
  /** Where a durable created now starts (default the start of the stream). */
  startSeq?: number;
}

/** Consumer info, or undefined when the durable does not exist. */
export async function durableInfo(
  jsm: JetStreamManager,
  stream: string,
  durable: string,
): Promise<ConsumerInfo | undefined> {
  try {
    return await jsm.consumers.info(stream, durable);
  } catch (err) {
    if (err instanceof JetStreamApiError && err.code === JetStreamApiCodes.ConsumerNotFound) return undefined;
    throw err;
  }
}

/**
 * Creates the durable (explicit acks, from the start of the stream) or updates the settings of an
 * existing one that differ. Throws ConsumerConfigError for a durable it cannot take over.
 */
export async function ensureDurable(jsm: JetStreamManager, spec: DurableSpec, log: Logger): Promise<void> {
  const { stream, durable, filter } = spec;
  const want: Partial<ConsumerConfig> = {
    durable_name: durable,
    ack_policy: AckPolicy.Explicit,
    ...(spec.startSeq !== undefined
      ? { deliver_policy: DeliverPolicy.StartSequence, opt_start_seq: spec.startSeq }
      : { deliver_policy: DeliverPolicy.All }),
    ack_wait: nanos(spec.ackWaitMs),
    max_ack_pending: spec.maxAckPending,
    // Unlimited on the server: at the server's limit a message would silently stop being
    // delivered; the runner counts deliveries itself and dead-letters instead.
    max_deliver: -1,
    ...filter.server,
  };
  const info = await durableInfo(jsm, stream, durable);
  if (!info) {
    // Created at the start of the stream only when nobody is moving it: a runner that lost its
    // durable in the middle of a move must not race the move and start over from sequence 1.
    if (await spec.isMoving?.())
      throw new DurableMovingError(`durable ${durable} is being moved (switchyard replay): waiting for it`);
    await jsm.consumers.add(stream, want);
    log.info({ stream, durable }, 'created the durable consumer');
    return;
  }
  const have = info.config;
  if (have.deliver_subject)
    throw new ConsumerConfigError(
      `durable ${durable} on ${stream} is a push consumer: delete it or pick another name`,
    );
  if (have.ack_policy !== AckPolicy.Explicit)
    throw new ConsumerConfigError(
      `durable ${durable} on ${stream} has ack policy ${have.ack_policy}, not explicit`,
    );
  const unfiltered = !have.filter_subject && !have.filter_subjects?.length;
  // The runner always asks for a filter (cloud/runner-filters.ts).
  if (unfiltered)
    throw new ConsumerConfigError(
      `durable ${durable} on ${stream} has no filter subject, and nats-server 2.9 skips every message ` +
        'a durable has not delivered yet when a filter is added to it: delete it (its consumer then ' +
        'starts again from the first message the stream holds) or pick another name',
    );
  const sameFilter =
    'filter_subject' in filter.server
      ? (have.filter_subject ?? '') === filter.server.filter_subject && !have.filter_subjects?.length
      : JSON.stringify(have.filter_subjects ?? []) === JSON.stringify(filter.server.filter_subjects);
  if (
    have.ack_wait !== want.ack_wait ||
    have.max_ack_pending !== want.max_ack_pending ||
    have.max_deliver !== want.max_deliver ||
    !sameFilter
  ) {
    const { durable_name: _, ack_policy: _a, deliver_policy: _d, opt_start_seq: _s, ...update } = want;
    await jsm.consumers.update(stream, durable, update);
    log.info({ stream, durable, update }, 'updated the durable consumer');
  }
}
