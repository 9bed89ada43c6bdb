/**
 * The engine swap, one step per command, each safe to run again (docs/engine-swap.md):
 *
 * 1. `start`: the new engine's durable (`ingest-<to>`) is created at the hub's next sequence W and
 *    W is recorded in the control bucket; from here both engines ingest everything new.
 * 2. `backfill`: everything before W goes into the new engine, from the stream while it holds it
 *    and from the archive before that (cloud/replay.ts: one sequence space).
 * 3. `verify`: old engine against new, per site, device and hour (cloud/ingest/verify.ts).
 * 4. `cutover`: what to switch; the old engine's durable is deleted only when confirmed.
 */
import { jetstreamManager, type ConsumerInfo } from '@nats-io/jetstream';
import type { NatsConnection } from '@nats-io/transport-node';
import type { Logger } from '../lib/log.ts';
import { controlBucket } from './control.ts';
import { durableInfo, ensureDurable } from './durable.ts';
import { consumerFilter } from './runner-filters.ts';

/** What `start` recorded. */
export interface MigrationRecord {
  from: string;
  to: string;
  stream: string;
  /** The first sequence the new engine's durable delivers: everything before it is backfilled. */
  startSeq: number;
  startedAt: string;
  /** Set by `backfill` once everything before `startSeq` was written. */
  backfilledAt?: string;
  /** Set by `cutover --confirm`. */
  cutoverAt?: string;
}

/** The durable of an engine (as `ingest --sink` names it). */
export const engineDurable = (engine: string): string => `ingest-${engine}`;

const recordKey = (from: string, to: string): string => `migrate.${from}.${to}`;

export async function readMigration(
  nc: NatsConnection,
  from: string,
  to: string,
): Promise<MigrationRecord | undefined> {
  const entry = await (await controlBucket(nc)).get(recordKey(from, to));
  return entry && entry.operation === 'PUT' ? entry.json<MigrationRecord>() : undefined;
}

export async function writeMigration(nc: NatsConnection, record: MigrationRecord): Promise<void> {
  await (await controlBucket(nc)).put(recordKey(record.from, record.to), JSON.stringify(record));
}

/** Where a swap stands: what each step will do next. */
export interface MigrationPlan {
  from: string;
  to: string;
  stream: string;
  streamFirstSeq: number;
  streamLastSeq: number;
  record: MigrationRecord | undefined;
  durables: Record<string, { exists: boolean; ackFloorSeq?: number; pending?: number }>;
  steps: {
    step: 'start' | 'backfill' | 'verify' | 'cutover';
    state: 'done' | 'next' | 'later';
    what: string;
  }[];
}

const durableState = (info: ConsumerInfo | undefined) =>
  info
    ? { exists: true, ackFloorSeq: info.ack_floor.stream_seq, pending: info.num_pending }
    : { exists: false };

export async function planMigration(
  nc: NatsConnection,
  options: { from: string; to: string; stream: string },
): Promise<MigrationPlan> {
  const jsm = await jetstreamManager(nc);
  const state = (await jsm.streams.info(options.stream)).state;
  const record = await readMigration(nc, options.from, options.to);
  const [oldInfo, newInfo] = await Promise.all(
    [options.from, options.to].map((e) => durableInfo(jsm, options.stream, engineDurable(e))),
  );
  const next = state.last_seq + 1;
  const first = state.messages > 0 ? state.first_seq : next;
  const steps: MigrationPlan['steps'] = [
    {
      step: 'start',
      state: record ? 'done' : 'next',
      what: record
        ? `${engineDurable(options.to)} delivers from sequence ${record.startSeq} (recorded ${record.startedAt})`
        : `create ${engineDurable(options.to)} at the hub's next sequence (now ${next}) and record it`,
    },
    {
      step: 'backfill',
      state: record?.backfilledAt ? 'done' : record ? 'next' : 'later',
      what: record
        ? `sequences 1–${record.startSeq - 1} into ${options.to}: ` +
          (record.startSeq - 1 < first
            ? 'all from the archive'
            : first > 1
              ? `1–${first - 1} from the archive, ${first}–${record.startSeq - 1} from the stream`
              : 'all from the stream')
        : 'everything before the recorded sequence into the new engine',
    },
    {
      step: 'verify',
      state: record?.backfilledAt ? 'next' : 'later',
      what: `compare ${options.from} and ${options.to} per site, device and hour (counts, min/max/sum)`,
    },
    {
      step: 'cutover',
      state: record?.cutoverAt ? 'done' : 'later',
      what: `switch readers to ${options.to}; delete ${engineDurable(options.from)} with --confirm`,
    },
  ];
  return {
    ...options,
    streamFirstSeq: first,
    streamLastSeq: state.last_seq,
    record,
    durables: {
      [engineDurable(options.from)]: durableState(oldInfo),
      [engineDurable(options.to)]: durableState(newInfo),
    },
    steps,
  };
}

/**
 * Creates the new engine's durable at the hub's next sequence and records that sequence. Run again,
 * it changes nothing and returns what was recorded.
 */
export async function startMigration(
  nc: NatsConnection,
  options: {
    from: string;
    to: string;
    stream: string;
    /** The ingest consumer's settings for the new engine (filter, ack settings). */
    consumer: { filterSubjects: string[]; ackWaitMs: number; maxAckPending: number };
    log: Logger;
  },
): Promise<{ record: MigrationRecord; created: boolean }> {
  const existing = await readMigration(nc, options.from, options.to);
  if (existing) return { record: existing, created: false };
  const jsm = await jetstreamManager(nc);
  const durable = engineDurable(options.to);
  const info = await durableInfo(jsm, options.stream, durable);
  // A durable that already exists keeps its position: it ingests from where it started.
  const startSeq = info
    ? (info.config.opt_start_seq ?? 1)
    : (await jsm.streams.info(options.stream)).state.last_seq + 1;
  if (!info)
    await ensureDurable(
      jsm,
      {
        stream: options.stream,
        durable,
        ackWaitMs: options.consumer.ackWaitMs,
        maxAckPending: options.consumer.maxAckPending,
        filter: consumerFilter(options.consumer.filterSubjects, nc.info?.version),
        startSeq,
      },
      options.log,
    );
  const record: MigrationRecord = {
    from: options.from,
    to: options.to,
    stream: options.stream,
    startSeq,
    startedAt: new Date().toISOString(),
  };
  await writeMigration(nc, record);
  return { record, created: !info };
}
