/**
 * Moving a consumer's durable to another stream sequence, so that the running service
 * re-processes from there (`switchyard replay --consumer`). nats-server 2.9 cannot reset a
 * consumer: the durable is deleted and created again at `opt_start_seq` with the same filter and
 * ack settings. That is only safe with nobody attached, so the move is refused while any instance
 * announces itself (cloud/control.ts) or pulls; and a marker in the control bucket keeps a runner
 * that starts meanwhile from recreating the durable at the start of the stream.
 */
import {
  AckPolicy,
  DeliverPolicy,
  jetstream,
  jetstreamManager,
  type ConsumerConfig,
  type ConsumerInfo,
} from '@nats-io/jetstream';
import type { NatsConnection } from '@nats-io/transport-node';
import { UsageError } from '../lib/errors.ts';
import {
  attachedInstances,
  clearMoveMarker,
  controlBucket,
  presenceBucket,
  putMoveMarker,
  readMoveMarker,
} from './control.ts';
import { durableInfo } from './durable.ts';
import { countHubRange } from './hub-reader.ts';

export interface MovePlan {
  stream: string;
  durable: string;
  /** The durable's filter (one subject on nats-server 2.9). */
  filter: string | undefined;
  before: {
    /** Last stream sequence delivered, and the sequence below which everything is acked. */
    deliveredSeq: number;
    ackFloorSeq: number;
    pending: number;
    ackPending: number;
  };
  /** The first sequence the moved durable delivers. */
  startSeq: number;
  /** Last sequence of the stream when planned. */
  lastSeq: number;
  /** Messages (matching the filter) the consumer will process from `startSeq` to `lastSeq`. */
  toProcess: number;
  /** Stored times of the first and last message to process (ISO-8601), when there are any. */
  firstTime?: string;
  lastTime?: string;
  /** When the plan was made from a time: that time, and the sequence it resolved to. */
  fromTime?: string;
}

/** The first sequence stored at or after `timeIso`, or the stream's next sequence when none is. */
export async function sequenceAtTime(nc: NatsConnection, stream: string, timeIso: string): Promise<number> {
  const jsm = await jetstreamManager(nc);
  const info = await jsm.streams.info(stream);
  if (info.state.messages === 0) return info.state.last_seq + 1;
  const consumer = await jetstream(nc).consumers.get(stream, {
    deliver_policy: DeliverPolicy.StartTime,
    opt_start_time: timeIso,
  });
  const msg = await consumer.next({ expires: 2_000 });
  await consumer.delete().catch(() => undefined);
  return msg ? msg.seq : info.state.last_seq + 1;
}

/** What moving `durable` to `fromSeq` (or to the first message at `fromTime`) would do. */
export async function planMove(
  nc: NatsConnection,
  options: { stream: string; durable: string; fromSeq?: number; fromTime?: string },
): Promise<MovePlan> {
  const jsm = await jetstreamManager(nc);
  const info = await durableInfo(jsm, options.stream, options.durable);
  if (!info)
    throw new UsageError(
      `no durable ${options.durable} on ${options.stream}: start its consumer once, or replay with --to instead`,
    );
  if (info.config.deliver_subject)
    throw new UsageError(
      `durable ${options.durable} is a push consumer: Switchyard moves pull consumers only`,
    );
  const stream = await jsm.streams.info(options.stream);
  const startSeq =
    options.fromTime !== undefined
      ? await sequenceAtTime(nc, options.stream, options.fromTime)
      : Math.max(1, options.fromSeq ?? 1);
  const filter = info.config.filter_subject || info.config.filter_subjects?.[0];
  const lastSeq = stream.state.last_seq;
  const toProcess = await countHubRange(nc, {
    stream: options.stream,
    fromSeq: startSeq,
    toSeq: lastSeq,
    filter,
  });
  const timeOf = async (seq: number) =>
    seq >= stream.state.first_seq && seq <= lastSeq
      ? (await jsm.streams.getMessage(options.stream, { seq }).catch(() => undefined))?.time.toISOString()
      : undefined;
  return {
    stream: options.stream,
    durable: options.durable,
    filter,
    before: {
      deliveredSeq: info.delivered.stream_seq,
      ackFloorSeq: info.ack_floor.stream_seq,
      pending: info.num_pending,
      ackPending: info.num_ack_pending,
    },
    startSeq,
    lastSeq,
    toProcess,
    firstTime: toProcess > 0 ? await timeOf(Math.max(startSeq, stream.state.first_seq)) : undefined,
    lastTime: toProcess > 0 ? await timeOf(lastSeq) : undefined,
    ...(options.fromTime !== undefined ? { fromTime: options.fromTime } : {}),
  };
}

/**
 * Recreates the durable at `plan.startSeq` with the settings it has now. Throws UsageError, and
 * changes nothing, while any instance is attached.
 */
export async function moveDurable(nc: NatsConnection, plan: MovePlan): Promise<ConsumerInfo> {
  const jsm = await jetstreamManager(nc);
  const control = await controlBucket(nc);
  const presence = await presenceBucket(nc);
  const existing = await readMoveMarker(control, plan.durable);
  if (existing)
    throw new UsageError(
      `durable ${plan.durable} is already being moved (to ${existing.toSeq}, since ${existing.startedAt}): ` +
        `if that move died, run this again after 'switchyard replay --consumer ${plan.durable} --clear-move --yes'`,
    );
  // The marker goes first: a runner that starts from here on waits instead of creating the durable.
  await putMoveMarker(control, {
    durable: plan.durable,
    toSeq: plan.startSeq,
    startedAt: new Date().toISOString(),
  });
  let deleted = false;
  let created = false;
  try {
    const attached = await attachedInstances(presence, plan.durable);
    const info = await durableInfo(jsm, plan.stream, plan.durable);
    if (!info) throw new UsageError(`durable ${plan.durable} disappeared while planning the move`);
    if (attached.length > 0 || info.num_waiting > 0 || info.push_bound)
      throw new UsageError(
        `durable ${plan.durable} has instances attached (${
          attached.map((a) => `${a.host} pid ${a.pid}`).join(', ') || `${info.num_waiting} waiting pulls`
        }): stop its consumers first (e.g. kubectl scale deployment/switchyard-${plan.durable.replace(/^ingest-.*/, 'ingest')} --replicas=0), then run this again`,
      );
    const {
      name: _n,
      durable_name: _d,
      deliver_policy: _p,
      opt_start_seq: _s,
      opt_start_time: _t,
      ...keep
    } = info.config as ConsumerConfig;
    await jsm.consumers.delete(plan.stream, plan.durable);
    deleted = true;
    const moved = await jsm.consumers.add(plan.stream, {
      ...keep,
      durable_name: plan.durable,
      ack_policy: AckPolicy.Explicit,
      deliver_policy: DeliverPolicy.StartSequence,
      opt_start_seq: plan.startSeq,
    });
    created = true;
    return moved;
  } finally {
    // Deleted and not created again: the marker stays, so no runner recreates the durable at the
    // start of the stream; the error tells the operator to run the move again.
    if (!deleted || created) await clearMoveMarker(control, plan.durable);
  }
}

/** Removes the marker a move that died left behind. */
export async function clearStaleMove(nc: NatsConnection, durable: string): Promise<boolean> {
  const control = await controlBucket(nc);
  const had = (await readMoveMarker(control, durable)) !== undefined;
  if (had) await clearMoveMarker(control, durable);
  return had;
}
