/**
 * One-shot replay of a sequence range through a consumer's own sink, no durable touched: one
 * sequence space whatever the stream's retention. The part of the range older than the first
 * sequence the stream still holds comes from the archive (verified through the manifests), the
 * rest from the stream; the seam is the stream's first sequence, so nothing is read twice and
 * nothing in between is skipped.
 */
import type { S3Client } from '@aws-sdk/client-s3';
import { jetstreamManager } from '@nats-io/jetstream';
import type { NatsConnection } from '@nats-io/transport-node';
import type { Logger } from '../lib/log.ts';
import type { Progress } from '../lib/progress.ts';
import { listArchiveGroups, readArchiveGroup, type SkippedObject } from './archive/reader.ts';
import { countHubRange, readHubRange } from './hub-reader.ts';
import type { Sink, SinkMessage } from './sink.ts';
import { emptyTally, SinkWriter, type FeedTally } from './sink-writer.ts';

export interface ReplayRequest {
  stream: string;
  fromSeq: number;
  /** Inclusive; default (and at most) the stream's last sequence. */
  toSeq?: number;
  site?: string;
  device?: string;
}

/** Where each part of a replay comes from. */
export interface ReplayPlan {
  stream: string;
  fromSeq: number;
  toSeq: number;
  /** The stream's first and last sequence when planned. */
  streamFirstSeq: number;
  streamLastSeq: number;
  /** Subject filter of the selection (`bsu.<site|*>.<device|*>.*`). */
  filter: string;
  /** Sequences read from the archive (the stream no longer holds them), if any. */
  archive?: { fromSeq: number; toSeq: number };
  /** Sequences read from the stream, and how many messages there match. */
  hub?: { fromSeq: number; toSeq: number; messages: number };
}

export interface ReplayReport extends FeedTally {
  plan: ReplayPlan;
  fromArchive: number;
  fromStream: number;
  /** Archive objects that failed verification or were missing: nothing of them was written. */
  skippedObjects: SkippedObject[];
  /** Sequences below the stream's first that the archive did not have (counted only without --site/--device). */
  missingFromArchive: number;
  dryRun: boolean;
}

/** Messages a plan reads: every sequence of its archive part (at most) and what its stream part holds. */
export const plannedMessages = (plan: ReplayPlan): number =>
  (plan.archive ? plan.archive.toSeq - plan.archive.fromSeq + 1 : 0) + (plan.hub?.messages ?? 0);

/** The subject filter of a site/device selection. */
export const selectionFilter = (site?: string, device?: string): string =>
  `bsu.${site ?? '*'}.${device ?? '*'}.*`;

export async function planReplay(nc: NatsConnection, request: ReplayRequest): Promise<ReplayPlan> {
  const jsm = await jetstreamManager(nc);
  const state = (await jsm.streams.info(request.stream)).state;
  const first = state.messages > 0 ? state.first_seq : state.last_seq + 1;
  const toSeq = Math.min(request.toSeq ?? state.last_seq, state.last_seq);
  const fromSeq = Math.max(1, request.fromSeq);
  const filter = selectionFilter(request.site, request.device);
  const plan: ReplayPlan = {
    stream: request.stream,
    fromSeq,
    toSeq,
    streamFirstSeq: first,
    streamLastSeq: state.last_seq,
    filter,
  };
  if (fromSeq < first && fromSeq <= toSeq) plan.archive = { fromSeq, toSeq: Math.min(toSeq, first - 1) };
  const hubFrom = Math.max(fromSeq, first);
  if (hubFrom <= toSeq)
    plan.hub = {
      fromSeq: hubFrom,
      toSeq,
      messages: await countHubRange(nc, { stream: request.stream, fromSeq: hubFrom, toSeq, filter }),
    };
  return plan;
}

export interface ReplayRun {
  plan: ReplayPlan;
  request: ReplayRequest;
  nc: NatsConnection;
  sink: Sink;
  /** The consumer's own subject filters: messages outside them are counted as skipped. */
  consumerFilters: readonly string[];
  /** Needed when the plan reads the archive. */
  archive?: { client: S3Client; bucket: string; prefix: string };
  batchSize: number;
  log: Logger;
  progress?: Progress;
  signal?: AbortSignal;
  dryRun?: boolean;
}

export async function runReplay(run: ReplayRun): Promise<ReplayReport> {
  const { plan, request } = run;
  const report: ReplayReport = {
    plan,
    fromArchive: 0,
    fromStream: 0,
    ...emptyTally(),
    skippedObjects: [],
    missingFromArchive: 0,
    dryRun: run.dryRun ?? false,
  };
  const writer = new SinkWriter({ sink: run.sink, log: run.log, signal: run.signal });
  const feed = async (messages: SinkMessage[]): Promise<void> => {
    await writer.feed(messages, {
      filters: run.consumerFilters,
      batchSize: run.batchSize,
      tally: report,
      dryRun: run.dryRun,
    });
    run.progress?.increment(messages.length);
  };

  if (plan.archive) {
    if (!run.archive) throw new Error('the range starts before the stream: the archive settings are needed');
    const { client, bucket, prefix } = run.archive;
    const selection = { ...plan.archive, site: request.site, device: request.device };
    const groups = await listArchiveGroups(client, bucket, prefix, selection);
    const seen = new Set<number>();
    for (const group of groups) {
      run.signal?.throwIfAborted();
      const { messages, skipped } = await readArchiveGroup(client, bucket, group, selection);
      report.skippedObjects.push(...skipped);
      for (const m of messages) seen.add(m.seq);
      report.fromArchive += messages.length;
      await feed(messages);
    }
    if (request.site === undefined && request.device === undefined)
      report.missingFromArchive = plan.archive.toSeq - plan.archive.fromSeq + 1 - seen.size;
  }
  if (plan.hub) {
    for await (const { messages, unparsed } of readHubRange(run.nc, {
      stream: plan.stream,
      fromSeq: plan.hub.fromSeq,
      toSeq: plan.hub.toSeq,
      filter: plan.filter,
      batchSize: run.batchSize,
      signal: run.signal,
    })) {
      report.fromStream += messages.length + unparsed.length;
      report.skipped += unparsed.length;
      await feed(messages);
    }
  }
  return report;
}
