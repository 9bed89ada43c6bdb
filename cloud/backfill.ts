/**
 * Backfill: a time range of the archive fed through a consumer's sink, e.g. to fill a new engine.
 * The archive is read per group of objects (cloud/archive/reader.ts: verified objects, each sequence
 * once, in sequence order), and every finished group is checkpointed, so a backfill that was
 * killed resumes with the first group it had not finished. A corrupt or missing object is reported
 * by key and skipped whole; the backfill carries on.
 */
import type { S3Client } from '@aws-sdk/client-s3';
import { createHash } from 'node:crypto';
import { mkdirSync, readFileSync, renameSync, writeFileSync } from 'node:fs';
import { dirname } from 'node:path';
import type { Logger } from '../lib/log.ts';
import type { Progress } from '../lib/progress.ts';
import {
  listArchiveGroups,
  readArchiveGroup,
  type ArchiveSelection,
  type SkippedObject,
} from './archive/reader.ts';
import type { Sink } from './sink.ts';
import { emptyTally, SinkWriter, type FeedTally } from './sink-writer.ts';

export interface BackfillRequest {
  /** Receive time, ms since epoch: `sinceMs` inclusive, `untilMs` exclusive. */
  sinceMs: number;
  untilMs: number;
  site?: string;
  device?: string;
  /** The durable whose sink is filled. */
  target: string;
  /**
   * A digest of where that sink writes (its settings: URL, database …), so that a checkpoint of one
   * database is never taken for another's.
   */
  destination?: string;
}

/** What a backfill has finished, kept between runs. */
export interface BackfillCheckpoint {
  version: 1;
  /** Identity of the request it belongs to (a changed request starts over). */
  request: string;
  /** Groups (their ids, cloud/archive/reader.ts) written completely. */
  done: string[];
  written: number;
  updatedAt: string;
}

export interface BackfillReport extends FeedTally {
  request: BackfillRequest;
  groups: number;
  /** Groups finished by an earlier run and not read again. */
  resumed: number;
  records: number;
  skippedObjects: SkippedObject[];
  checkpoint: string;
}

/** A stable identity of a request, for its checkpoint. */
export const backfillId = (r: BackfillRequest): string =>
  createHash('sha256')
    .update(
      JSON.stringify([r.target, r.destination ?? '', r.sinceMs, r.untilMs, r.site ?? '', r.device ?? '']),
    )
    .digest('hex')
    .slice(0, 16);

/** The checkpoint file of a request, or an empty one. */
export function readCheckpoint(path: string, request: BackfillRequest): BackfillCheckpoint {
  const fresh: BackfillCheckpoint = {
    version: 1,
    request: backfillId(request),
    done: [],
    written: 0,
    updatedAt: new Date().toISOString(),
  };
  try {
    const saved = JSON.parse(readFileSync(path, 'utf8')) as BackfillCheckpoint;
    return saved.version === 1 && saved.request === fresh.request ? saved : fresh;
  } catch {
    return fresh;
  }
}

function writeCheckpoint(path: string, checkpoint: BackfillCheckpoint): void {
  mkdirSync(dirname(path), { recursive: true });
  // Written aside and renamed: a backfill killed mid-write leaves the previous checkpoint whole.
  const tmp = `${path}.tmp`;
  writeFileSync(tmp, `${JSON.stringify({ ...checkpoint, updatedAt: new Date().toISOString() })}\n`);
  renameSync(tmp, path);
}

export interface BackfillRun {
  request: BackfillRequest;
  archive: { client: S3Client; bucket: string; prefix: string };
  sink: Sink;
  consumerFilters: readonly string[];
  batchSize: number;
  /** Path of the checkpoint file. */
  checkpoint: string;
  log: Logger;
  /** Counts groups (cloud/archive/reader.ts). */
  progress?: (total: number) => Progress;
  signal?: AbortSignal;
}

export async function runBackfill(run: BackfillRun): Promise<BackfillReport> {
  const { request, archive } = run;
  const selection: ArchiveSelection = {
    sinceMs: request.sinceMs,
    untilMs: request.untilMs,
    site: request.site,
    device: request.device,
  };
  const groups = await listArchiveGroups(archive.client, archive.bucket, archive.prefix, selection);
  const checkpoint = readCheckpoint(run.checkpoint, request);
  const done = new Set(checkpoint.done);
  const writtenBefore = checkpoint.written;
  const report: BackfillReport = {
    request,
    groups: groups.length,
    resumed: groups.filter((g) => done.has(g.id)).length,
    records: 0,
    ...emptyTally(),
    skippedObjects: [],
    checkpoint: run.checkpoint,
  };
  const progress = run.progress?.(groups.length);
  progress?.increment(report.resumed);
  const writer = new SinkWriter({ sink: run.sink, log: run.log, signal: run.signal });
  try {
    for (const group of groups) {
      if (done.has(group.id)) continue;
      run.signal?.throwIfAborted();
      const { messages, skipped } = await readArchiveGroup(archive.client, archive.bucket, group, selection);
      report.skippedObjects.push(...skipped);
      report.records += messages.length;
      await writer.feed(messages, { filters: run.consumerFilters, batchSize: run.batchSize, tally: report });
      done.add(group.id);
      checkpoint.done.push(group.id);
      checkpoint.written = writtenBefore + report.written;
      writeCheckpoint(run.checkpoint, checkpoint);
      progress?.increment(1);
    }
  } finally {
    progress?.stop();
  }
  return report;
}
