/**
 * The completeness ledger behind `switchyard audit`: did anything get lost between the hub stream,
 * the S3 archive and the engines ingest writes to? docs/audit.md explains how to read its answer.
 *
 * Per site and hour of the window it counts three places:
 * - the hub stream: messages by *receive* hour (the archive's hour), read from the first sequence
 *   stored at the window's start (less a clock-skew margin) to the end of the stream, so that what
 *   a site's outage delivered late is counted in the hour it was received;
 * - the archive: the distinct sequences of each site-hour, from the union of the manifests'
 *   `seqRanges` (redelivered batches overlap, so summing counts would double-count), or with
 *   `deep` from the objects themselves, each verified against its manifest's sha256;
 * - each engine that has an ingest durable (`ingest-<engine>`): points of `telemetry`, `status`
 *   and `event` per site and *device-time* hour, against the points the messages themselves map to
 *   (messagePoints: the mapping ingest writes with), counted as distinct series and timestamps,
 *   which is how the engines keep them.
 *
 * Only what can be shown is a gap. The stream is the reference, so an hour is compared only while
 * the stream still holds all of it (for the engines with `deep`, the archive's records stand in for
 * the stream in older hours); and what a consumer has not acknowledged yet (after its durable's ack
 * floor) is "not yet", never "lost". Ack floors are read before anything else, so a message that
 * reaches a store while the audit runs can only make the stores look more complete, never less.
 */
import { NoSuchKey, type S3Client } from '@aws-sdk/client-s3';
import { jetstreamManager, type ConsumerInfo } from '@nats-io/jetstream';
import type { NatsConnection } from '@nats-io/transport-node';
import { UsageError } from '../lib/errors.ts';
import { sleep } from '../lib/timers.ts';
import { isStreamNotFound } from '../lib/nats.ts';
import type { Progress } from '../lib/progress.ts';
import { dataKeyOf, receivedAtMs, type ArchivePart } from './archive/layout.ts';
import { archiveRecordMessage, listArchiveGroups, type ArchiveGroup } from './archive/reader.ts';
import { ArchiveIntegrityError, readArchiveParts, readManifest } from './archive/s3.ts';
import { listDeadLetters } from './dlq-admin.ts';
import { DLQ_STREAM } from './dlq.ts';
import { durableInfo } from './durable.ts';
import { countHubRange, readHubRange } from './hub-reader.ts';
import { HOUR_MS, pointCountField, type EngineReader } from './ingest/readers/reader.ts';
import { Measurement, messagePoints, Tag } from './ingest/line-protocol.ts';
import { engineDurable } from './migrate.ts';
import { sequenceAtTime } from './move-durable.ts';
import { IngestEngine } from './ingest/config.ts';

/** Measurements the audit counts: those with a field every point carries (`seq`). */
export const AUDIT_MEASUREMENTS: readonly string[] = [
  Measurement.telemetry,
  Measurement.status,
  Measurement.event,
];

/** Default margin for gateway clocks ahead of the hub's: 5 minutes. */
export const DEFAULT_CLOCK_SKEW_MS = 5 * 60_000;
/** Default number of sequences listed per gap. */
export const DEFAULT_SAMPLE_SIZE = 20;
/**
 * Default time an engine short of points gets to show writes it already acknowledged: 10 s.
 * VictoriaMetrics 1.79 answers a write before every reader sees it; after a `delete_series` the
 * points written next stayed invisible for about 5 s here, force_flush or not.
 */
export const DEFAULT_ENGINE_SETTLE_MS = 10_000;
/** Interval of the re-reads of short hours, ms. */
export const ENGINE_RECHECK_MS = 2_000;

/** `where` of an archive gap; an engine gap names the engine (`influx1`, `influx2`). */
export const ARCHIVE = 'archive';

export interface AuditOptions {
  nc: NatsConnection;
  /** The hub stream (`BSU`). */
  stream: string;
  /** The dead-letter stream, to tell which missing points were dead-lettered (default `BSU_DLQ`). */
  dlqStream?: string;
  /**
   * The window, ms since the epoch, `sinceMs` inclusive, `untilMs` exclusive: receive time for the
   * stream and the archive, device time for the engines. Widened to whole UTC hours.
   */
  sinceMs: number;
  untilMs: number;
  /** Only this site. */
  site?: string;
  /** Read and verify every archive object, and compare engines in hours the stream no longer holds. */
  deep?: boolean;
  /** The archive's bucket, key prefix and the durable that writes it. */
  archive: { client: S3Client; bucket: string; prefix: string; durable: string };
  /**
   * The reader of an engine. Called only for engines that have an ingest durable on the stream;
   * the readers are closed when the audit ends.
   */
  engineReader: (engine: IngestEngine) => EngineReader;
  /** How far a gateway's clock may run ahead of the hub's, ms (default DEFAULT_CLOCK_SKEW_MS). */
  clockSkewMs?: number;
  /** Sequences listed per gap (default DEFAULT_SAMPLE_SIZE). */
  sampleSize?: number;
  /**
   * How long an engine that is short of points is given to show them, ms (default
   * DEFAULT_ENGINE_SETTLE_MS): the short hours are read again every ENGINE_RECHECK_MS until they
   * are complete or this has passed, and only what is still missing then is a gap.
   */
  settleMs?: number;
  /** Progress of the long reads (manifests, objects, the stream). */
  progress?: (options: { label: string; unit: string; total: number }) => Progress;
  signal?: AbortSignal;
}

/** Where a durable is, as the audit read it before counting anything. */
export interface DurableLag {
  durable: string;
  /** `archive`, or the engine an ingest durable writes to. */
  target: string;
  exists: boolean;
  /** Every sequence up to this one is acknowledged (0 when the durable does not exist). */
  ackFloorSeq: number;
  /** Last sequence delivered. */
  deliveredSeq: number;
  /** Messages not delivered yet (`num_pending`) and delivered but not acknowledged (`num_ack_pending`). */
  pending: number;
  ackPending: number;
  /** Ingest durables: dead letters it left in the dead-letter stream (any time, any site). */
  deadLetters?: number;
}

/** An archive object that could not be used: unreadable, missing, or not matching its manifest. */
export interface BadObject {
  /** Key of the data object. */
  key: string;
  manifestKey: string;
  reason: string;
  /**
   * Sequences its manifest lists that no verified object of the same site-hour holds; undefined
   * when the manifest itself cannot be read (what the object held is unknown).
   */
  uncovered?: number;
  /** The first of those sequences, ascending. */
  sequences?: number[];
}

/** One engine's figures for one site and device-time hour, over the audited measurements. */
export interface EngineCell {
  /** Whether expected and found were compared (see AuditRow.held and `deep`). */
  compared: boolean;
  /** Distinct points that messages acknowledged by the engine's durable map to. */
  expected: number;
  /** Points the engine holds. */
  found: number;
  /** Points only messages after the durable's ack floor map to: not ingested yet, not lost. */
  notYet: number;
  /** Points expected and absent, summed per device and measurement. */
  missing: number;
}

/** One site and hour. `hub` and `archive` count by receive hour, engines by device-time hour. */
export interface AuditRow {
  site: string;
  /** `YYYY-MM-DDTHH` (UTC). */
  hour: string;
  /** The stream still holds every message of the hour: the hour is compared against it. */
  held: boolean;
  /** Messages the stream holds that were received in this hour (all of them when `held`). */
  hub: number;
  /** Distinct sequences the archive has for this hour (manifests; verified objects with `deep`). */
  archive: number;
  archiveObjects: number;
  /** Held hours: sequences in the stream missing from the archive and acknowledged by its durable. */
  archiveLost: number;
  /** Held hours: sequences missing from the archive after its durable's ack floor. */
  archiveNotYet: number;
  engines: Record<string, EngineCell>;
}

/** Sequences of the stream that the archive lacks, for one site and receive hour. */
export interface ArchiveGap {
  site: string;
  hour: string;
  where: typeof ARCHIVE;
  /** How many sequences are missing. */
  missing: number;
  /** The first of them, ascending. */
  sequences: number[];
  /** `deep` (or a manifest that cannot be read): the objects of the hour that could not be used. */
  objects?: BadObject[];
}

/** Points an engine lacks, for one site, device-time hour and measurement. */
export interface EngineGap {
  site: string;
  hour: string;
  /** The engine, as `ingest --sink` names it. */
  where: string;
  measurement: string;
  /** Points the acknowledged messages map to, and points the engine holds. */
  expected: number;
  found: number;
  /** Sum of the devices' shortfalls (a surplus of one device does not hide another's loss). */
  missing: number;
  /**
   * Of the missing points, those whose message the engine's durable dead-lettered (a point the
   * database refused): `switchyard dlq list --consumer ingest-<engine>` has them, redrive repairs.
   */
  deadLettered: number;
  /** The devices short of points. */
  devices: { device: string; expected: number; found: number; deadLettered: number }[];
}

export type AuditGap = ArchiveGap | EngineGap;

/** What a consumer has not done yet: after its ack floor, so not a gap. */
export interface NotYet {
  site: string;
  hour: string;
  /** `archive` or the engine. */
  where: string;
  /** Sequences (archive) or points (engines). */
  count: number;
  /** Archive: the first sequences. */
  sequences?: number[];
}

export interface AuditReport {
  stream: string;
  /** The window as audited: whole hours, ISO-8601. */
  since: string;
  until: string;
  site?: string;
  deep: boolean;
  /** The stream when the audit started: the last sequence is where the audit stops reading. */
  streamState: {
    firstSeq: number;
    lastSeq: number;
    messages: number;
    /** First hour compared against the stream; null when it holds none of the window's past. */
    heldFrom: string | null;
  };
  durables: DurableLag[];
  /** Engines audited: those with an ingest durable. */
  engines: string[];
  measurements: readonly string[];
  rows: AuditRow[];
  /** Sorted by site, hour, where. Empty: nothing lost that the audit can see. */
  gaps: AuditGap[];
  notYet: NotYet[];
  /** Archive objects that could not be used, whether or not other objects cover them. */
  badObjects: BadObject[];
  summary: {
    siteHours: number;
    heldSiteHours: number;
    hubMessages: number;
    /** Stream messages whose subject is not `bsu.<site>.<device>.<kind>` (never archived or ingested). */
    unparsed: number;
    archived: number;
    manifestsRead: number;
    objectsVerified: number;
    archiveLost: number;
    archiveNotYet: number;
    /** Per engine: points expected (compared hours), found, missing, not yet ingested. */
    engines: Record<string, { expected: number; found: number; missing: number; notYet: number }>;
    gaps: number;
  };
}

// ---------------------------------------------------------------------------------------------
// Sequence sets

/**
 * The union of inclusive runs `[from, to]`, sorted, overlapping and adjacent runs merged:
 * [[5,7],[1,2],[3,3],[6,9]] → [[1,3],[5,9]].
 */
export function unionSeqRanges(ranges: Iterable<readonly [number, number]>): [number, number][] {
  const sorted = [...ranges].map(([a, b]): [number, number] => [a, b]).sort((x, y) => x[0] - y[0]);
  const out: [number, number][] = [];
  for (const [from, to] of sorted) {
    const last = out.at(-1);
    if (last && from <= last[1] + 1) last[1] = Math.max(last[1], to);
    else out.push([from, to]);
  }
  return out;
}

/** Sequences in sorted disjoint runs, for lookups (binary search) and counting. */
export class SeqSet {
  private readonly starts: number[];
  private readonly ends: number[];

  /** From any runs; they are merged first. */
  constructor(ranges: Iterable<readonly [number, number]>) {
    const merged = unionSeqRanges(ranges);
    this.starts = merged.map((r) => r[0]);
    this.ends = merged.map((r) => r[1]);
  }

  has(seq: number): boolean {
    let lo = 0;
    let hi = this.starts.length - 1;
    while (lo <= hi) {
      const mid = (lo + hi) >> 1;
      if (seq < this.starts[mid]!) hi = mid - 1;
      else if (seq > this.ends[mid]!) lo = mid + 1;
      else return true;
    }
    return false;
  }

  /** How many sequences up to `maxSeq` (inclusive) the set holds. */
  countUpTo(maxSeq: number): number {
    let n = 0;
    for (let i = 0; i < this.starts.length && this.starts[i]! <= maxSeq; i++)
      n += Math.min(this.ends[i]!, maxSeq) - this.starts[i]! + 1;
    return n;
  }
}

// ---------------------------------------------------------------------------------------------
// Points

/**
 * Distinct points of one series, as `[timeMs, seq]` pairs (one per message that maps to the point;
 * the same reading stored twice gives two pairs and one point). Returns, per distinct time, the
 * lowest sequence of a message that maps to it: the point must be in an engine once its durable
 * acknowledged that sequence.
 */
export function firstSeqPerPoint(pairs: readonly number[]): number[] {
  const n = pairs.length / 2;
  const order = Array.from({ length: n }, (_, i) => i).sort(
    (a, b) => pairs[2 * a]! - pairs[2 * b]! || pairs[2 * a + 1]! - pairs[2 * b + 1]!,
  );
  const out: number[] = [];
  let lastTime = Number.NaN;
  for (const i of order) {
    const time = pairs[2 * i]!;
    if (time !== lastTime) out.push(pairs[2 * i + 1]!);
    lastTime = time;
  }
  return out;
}

/** Tags of a point besides site and device, as one key: the rest of its series' identity. */
function seriesRest(tags: Readonly<Record<string, string>>): string {
  let rest = '';
  for (const key of Object.keys(tags).sort())
    if (key !== Tag.site && key !== Tag.device && tags[key] !== '') rest += `${key}=${tags[key]},`;
  return rest;
}

// ---------------------------------------------------------------------------------------------
// The audit

/**
 * From when the stream holds every message, ms since the epoch: an hour starting after this is
 * compared against it. A stream that never lost its start (first sequence 1, or never written)
 * holds everything (-Infinity); one emptied by its limits holds no past hour (+Infinity); otherwise
 * the first stored message's time plus `skewMs`, for a gateway whose clock runs ahead of the hub's
 * (its receive times are later than the hub's store times).
 */
export function streamHeldFromMs(
  state: { first_seq: number; last_seq: number; messages: number; first_ts: string },
  skewMs: number,
): number {
  if (state.messages === 0) return state.last_seq === 0 ? Number.NEGATIVE_INFINITY : Number.POSITIVE_INFINITY;
  if (state.first_seq <= 1) return Number.NEGATIVE_INFINITY;
  return Date.parse(state.first_ts) + skewMs;
}

/** Runs the audit (see the module's comment). Throws UsageError when the stream does not exist. */
export async function runAudit(options: AuditOptions): Promise<AuditReport> {
  const audit = new Audit(options);
  try {
    return await audit.run();
  } finally {
    await audit.close();
  }
}

const SEP = '\n';
const hourLabel = (hourIndex: number): string => new Date(hourIndex * HOUR_MS).toISOString().slice(0, 13);
const hourIndexOfLabel = (hour: string): number => Date.parse(`${hour}:00:00.000Z`) / HOUR_MS;
/** What is known of one site and hour while the audit reads. */
interface RowState {
  site: string;
  hourIndex: number;
  hub: number;
  archive?: SeqSet;
  /** Runs of the archive's objects, until they are all read (then `archive`). */
  archiveRanges: [number, number][];
  archiveObjects: number;
  badObjects: BadObject[];
  lost: number;
  lostSample: number[];
  notYet: number;
  notYetSample: number[];
}

interface EngineState {
  engine: string;
  reader: EngineReader;
  ackFloorSeq: number;
  /** Stream sequences of the messages its durable dead-lettered. */
  deadLettered: Set<number>;
  /** `<measurement>\n<site>\n<hourIndex>\n<device>` → points found. */
  found: Map<string, number>;
}

/** Distinct expected points of one measurement, site, device-time hour and device. */
interface Expected {
  /** All of them. */
  all: number;
  /** Per point, the lowest sequence of a message that maps to it. */
  firstSeqs: number[];
}

/** A message as far as the expected points need it. */
type PointSource = { seq: number; site: string; device: string; kind: string; payload: Uint8Array };

/** One run of the audit: the phases in the order the module's comment gives. */
class Audit {
  private readonly sampleSize: number;
  private readonly skewMs: number;
  private readonly deep: boolean;
  private readonly firstHour: number;
  private readonly endHour: number;
  private readonly sinceMs: number;
  private readonly untilMs: number;
  private heldFromMs = Number.NEGATIVE_INFINITY;
  private lastSeq = 0;
  private archiveFloor = 0;
  private readonly durables: DurableLag[] = [];
  private readonly engines: EngineState[] = [];
  private readonly rows = new Map<string, RowState>();
  /** `<measurement>\n<site>\n<hourIndex>\n<device>\n<other tags>` → [time, seq, time, seq, …]. */
  private readonly points = new Map<string, number[]>();
  private readonly badObjects: BadObject[] = [];
  private manifestsRead = 0;
  private objectsVerified = 0;
  private unparsed = 0;

  constructor(private readonly options: AuditOptions) {
    this.sampleSize = options.sampleSize ?? DEFAULT_SAMPLE_SIZE;
    this.skewMs = options.clockSkewMs ?? DEFAULT_CLOCK_SKEW_MS;
    this.deep = options.deep ?? false;
    this.firstHour = Math.floor(options.sinceMs / HOUR_MS);
    this.endHour = Math.ceil(options.untilMs / HOUR_MS);
    if (!(this.endHour > this.firstHour))
      throw new UsageError('the window is empty: until must be after since');
    this.sinceMs = this.firstHour * HOUR_MS;
    this.untilMs = this.endHour * HOUR_MS;
  }

  async run(): Promise<AuditReport> {
    const state = await this.readPositions();
    await this.readArchive();
    for (const e of this.engines)
      for (const measurement of AUDIT_MEASUREMENTS)
        await this.readEngine(e, measurement, this.firstHour, this.endHour);
    await this.readStream();
    const expected = this.expectedPoints();
    for (const e of this.engines) await this.settle(e, expected);
    return this.report(state, expected);
  }

  async close(): Promise<void> {
    await Promise.all(this.engines.map((e) => e.reader.close().catch(() => undefined)));
  }

  private held(hourIndex: number): boolean {
    return hourIndex * HOUR_MS > this.heldFromMs;
  }

  /** Engines are compared where the stream holds the hour, or everywhere with `deep` (from the archive). */
  private engineCompared(hourIndex: number): boolean {
    return this.held(hourIndex) || this.deep;
  }

  private inWindow(ms: number): boolean {
    return ms >= this.sinceMs && ms < this.untilMs;
  }

  private row(site: string, hourIndex: number): RowState {
    const key = `${site}${SEP}${hourIndex}`;
    let r = this.rows.get(key);
    if (!r) {
      r = {
        site,
        hourIndex,
        hub: 0,
        archiveRanges: [],
        archiveObjects: 0,
        badObjects: [],
        lost: 0,
        lostSample: [],
        notYet: 0,
        notYetSample: [],
      };
      this.rows.set(key, r);
    }
    return r;
  }

  /** 1. The stream's state, then every durable's position and dead letters, before anything is counted. */
  private async readPositions() {
    const { nc, stream, signal } = this.options;
    const jsm = await jetstreamManager(nc);
    const state = await jsm.streams
      .info(stream)
      .then((info) => info.state)
      .catch((err: unknown) => {
        if (isStreamNotFound(err)) throw new UsageError(`no stream ${stream} on the hub`);
        throw err;
      });
    this.lastSeq = state.last_seq;
    this.heldFromMs = streamHeldFromMs(state, this.skewMs);
    const lag = (durable: string, target: string, info: ConsumerInfo | undefined): DurableLag => ({
      durable,
      target,
      exists: info !== undefined,
      ackFloorSeq: info?.ack_floor.stream_seq ?? 0,
      deliveredSeq: info?.delivered.stream_seq ?? 0,
      pending: info?.num_pending ?? 0,
      ackPending: info?.num_ack_pending ?? 0,
    });
    const archive = this.options.archive.durable;
    const archiveLag = lag(archive, ARCHIVE, await durableInfo(jsm, stream, archive));
    this.durables.push(archiveLag);
    this.archiveFloor = archiveLag.ackFloorSeq;
    for (const engine of Object.values(IngestEngine).sort()) {
      const durable = engineDurable(engine);
      const info = await durableInfo(jsm, stream, durable);
      const engineLag = lag(durable, engine, info);
      this.durables.push(engineLag);
      if (!info) continue;
      const deadLettered = new Set<number>();
      const selection = { stream: this.options.dlqStream ?? DLQ_STREAM, consumer: durable };
      for await (const letter of listDeadLetters(nc, selection, { signal }))
        if (letter.seq !== undefined) deadLettered.add(letter.seq);
      engineLag.deadLetters = deadLettered.size;
      this.engines.push({
        engine,
        reader: this.options.engineReader(engine),
        ackFloorSeq: info.ack_floor.stream_seq,
        deadLettered,
        found: new Map(),
      });
    }
    return state;
  }

  /** 2. The archive, per site and receive hour: manifests, or every object with `deep`. */
  private async readArchive(): Promise<void> {
    const { client, bucket, prefix } = this.options.archive;
    const { site, signal } = this.options;
    const groups = await listArchiveGroups(client, bucket, prefix, {
      site,
      sinceMs: this.sinceMs,
      untilMs: this.untilMs,
    });
    const total = groups.reduce((n, g) => n + g.manifestKeys.length, 0);
    if (total === 0) return;
    const progress = this.options.progress?.({
      label: this.deep ? 'audit: archive objects' : 'audit: archive manifests',
      unit: 'objects',
      total,
    });
    try {
      await forEachLimit(groups, this.deep ? 2 : 4, async (group) => {
        signal?.throwIfAborted();
        const hourIndex = hourIndexOfLabel(group.hour);
        // The records stand in for the stream only where it no longer holds the hour.
        const feed =
          this.held(hourIndex) || this.engines.length === 0 ? undefined : (m: PointSource) => this.expect(m);
        const read = this.deep
          ? await readGroupDeep(client, bucket, group, site, this.sampleSize, feed)
          : await readGroupManifests(client, bucket, group, site);
        this.manifestsRead += read.manifestsRead;
        this.objectsVerified += read.objectsVerified;
        progress?.increment(group.manifestKeys.length);
        for (const [partSite, held] of read.sites) {
          const r = this.row(partSite, hourIndex);
          r.archiveRanges.push(...held.ranges);
          r.archiveObjects += held.objects;
        }
        for (const { object, bySite } of read.bad) {
          this.badObjects.push(object);
          for (const [badSite, seen] of bySite) {
            const r = this.row(badSite, hourIndex);
            r.badObjects.push(seen);
            r.archiveObjects++;
          }
        }
      });
    } finally {
      progress?.stop();
    }
    for (const r of this.rows.values()) {
      if (r.archiveObjects > 0) r.archive = new SeqSet(r.archiveRanges);
      r.badObjects.sort(byKey);
    }
    this.badObjects.sort(byKey);
  }

  /**
   * 3. An engine's points of `measurement` per site, device and device-time hour in
   * [fromHour, toHour); replaces what an earlier read found in those hours.
   */
  private async readEngine(e: EngineState, measurement: string, fromHour: number, toHour: number) {
    const { site, signal } = this.options;
    signal?.throwIfAborted();
    const stats = await e.reader.hourlyStats({
      sinceMs: fromHour * HOUR_MS,
      untilMs: toHour * HOUR_MS,
      site,
      measurement,
      fields: [],
      signal,
    });
    for (const key of [...e.found.keys()]) {
      const [m, , hourText] = key.split(SEP);
      const hourIndex = Number(hourText);
      if (m === measurement && hourIndex >= fromHour && hourIndex < toHour) e.found.delete(key);
    }
    for (const row of stats) {
      const key = `${measurement}${SEP}${row.site}${SEP}${hourIndexOfLabel(row.hour)}${SEP}${row.device}`;
      e.found.set(key, (e.found.get(key) ?? 0) + row.count);
    }
  }

  /** 4. The stream, from the window's start (less the skew margin) to its last sequence. */
  private async readStream(): Promise<void> {
    const { nc, stream, site, signal } = this.options;
    const fromTime = new Date(this.sinceMs - this.skewMs).toISOString();
    const fromSeq = await sequenceAtTime(nc, stream, fromTime);
    if (fromSeq > this.lastSeq) return;
    const range = {
      stream,
      fromSeq,
      toSeq: this.lastSeq,
      filter: site !== undefined ? `bsu.${site}.>` : undefined,
      signal,
    };
    const total = await countHubRange(nc, range);
    const progress = this.options.progress?.({ label: 'audit: hub stream', unit: 'msgs', total });
    const engines = this.engines.length > 0;
    try {
      // Without engines the payloads are not needed: the headers say the receive time.
      for await (const batch of readHubRange(nc, { ...range, headersOnly: !engines })) {
        this.unparsed += batch.unparsed.length;
        for (const m of batch.messages) {
          const received = receivedAtMs(m);
          if (this.inWindow(received)) this.countHub(m.site, Math.floor(received / HOUR_MS), m.seq);
          if (engines) this.expect(m);
        }
        progress?.increment(batch.messages.length + batch.unparsed.length);
      }
    } finally {
      progress?.stop();
    }
  }

  /** A stream message received in `hourIndex`: counted, and looked up in the archive if the hour is held. */
  private countHub(site: string, hourIndex: number, seq: number): void {
    const r = this.row(site, hourIndex);
    r.hub++;
    if (!this.held(hourIndex) || r.archive?.has(seq)) return;
    if (seq > this.archiveFloor) {
      if (r.notYet++ < this.sampleSize) r.notYetSample.push(seq);
    } else if (r.lost++ < this.sampleSize) r.lostSample.push(seq);
  }

  /** The points a message maps to, as ingest writes them, kept by series and device-time hour. */
  private expect(message: PointSource): void {
    const outcome = messagePoints(message);
    if (outcome.outcome !== 'write') return;
    for (const p of outcome.points) {
      if (!AUDIT_MEASUREMENTS.includes(p.measurement) || !this.inWindow(p.timeMs)) continue;
      // The engines count the points that carry the count field; so does the audit.
      if (!(pointCountField(p.measurement) in p.fields)) continue;
      const hourIndex = Math.floor(p.timeMs / HOUR_MS);
      const key = [p.measurement, message.site, hourIndex, message.device, seriesRest(p.tags)].join(SEP);
      let list = this.points.get(key);
      if (!list) this.points.set(key, (list = []));
      list.push(Math.trunc(p.timeMs), message.seq);
    }
  }

  /** 5. Distinct points per measurement, site, hour and device, each with its first sequence. */
  private expectedPoints(): Map<string, Expected> {
    const expected = new Map<string, Expected>();
    for (const [key, pairs] of this.points) {
      const cell = key.slice(0, key.lastIndexOf(SEP));
      let x = expected.get(cell);
      if (!x) expected.set(cell, (x = { all: 0, firstSeqs: [] }));
      const firsts = firstSeqPerPoint(pairs);
      x.all += firsts.length;
      for (const s of firsts) x.firstSeqs.push(s);
    }
    this.points.clear();
    return expected;
  }

  /** Points the engine must hold: those of messages its durable acknowledged. */
  private static settled(x: Expected | undefined, e: EngineState): number {
    return x ? x.firstSeqs.filter((seq) => seq <= e.ackFloorSeq).length : 0;
  }

  /**
   * A shortfall may be writes the engine acknowledged and does not show yet: reads the short
   * measurements and hours again, every ENGINE_RECHECK_MS, until none is short or `settleMs` passed.
   */
  private async settle(e: EngineState, expected: Map<string, Expected>): Promise<void> {
    const settleMs = this.options.settleMs ?? DEFAULT_ENGINE_SETTLE_MS;
    const startedMs = Date.now();
    for (;;) {
      const short = new Map<string, { from: number; to: number }>();
      for (const [key, x] of expected) {
        const [measurement, , hourText] = key.split(SEP) as [string, string, string];
        const hourIndex = Number(hourText);
        if (!this.engineCompared(hourIndex) || (e.found.get(key) ?? 0) >= Audit.settled(x, e)) continue;
        const span = short.get(measurement);
        short.set(measurement, {
          from: Math.min(span?.from ?? hourIndex, hourIndex),
          to: Math.max(span?.to ?? hourIndex + 1, hourIndex + 1),
        });
      }
      const leftMs = settleMs - (Date.now() - startedMs);
      if (short.size === 0 || leftMs <= 0) return;
      await sleep(Math.min(ENGINE_RECHECK_MS, leftMs), this.options.signal);
      for (const [measurement, { from, to }] of short) await this.readEngine(e, measurement, from, to);
    }
  }

  /**
   * One engine against the expected points: its cell of every site-hour, and its gaps per site,
   * hour and measurement, whose totals cover every device, not only the short ones.
   */
  private compareEngine(
    e: EngineState,
    expected: Map<string, Expected>,
    cellOf: (site: string, hourIndex: number) => EngineCell,
  ): EngineGap[] {
    const totals = new Map<string, EngineGap>();
    for (const key of [...new Set([...expected.keys(), ...e.found.keys()])].sort()) {
      const [measurement, site, hourText, device] = key.split(SEP) as [string, string, string, string];
      const hourIndex = Number(hourText);
      const cell = cellOf(site, hourIndex);
      const found = e.found.get(key) ?? 0;
      cell.found += found;
      if (!cell.compared) continue;
      const x = expected.get(key);
      const settled = Audit.settled(x, e);
      cell.expected += settled;
      cell.notYet += (x?.all ?? 0) - settled;
      const totalKey = [site, hourIndex, measurement].join(SEP);
      let total = totals.get(totalKey);
      if (!total) {
        total = {
          site,
          hour: hourLabel(hourIndex),
          where: e.engine,
          measurement,
          expected: 0,
          found: 0,
          missing: 0,
          deadLettered: 0,
          devices: [],
        };
        totals.set(totalKey, total);
      }
      total.expected += settled;
      total.found += found;
      if (found >= settled) continue;
      cell.missing += settled - found;
      total.missing += settled - found;
      // At most the shortfall: a dead-lettered reading may have reached the engine another way.
      const dead = Math.min(
        settled - found,
        x ? x.firstSeqs.filter((s) => s <= e.ackFloorSeq && e.deadLettered.has(s)).length : 0,
      );
      total.deadLettered += dead;
      total.devices.push({ device, expected: settled, found, deadLettered: dead });
    }
    return [...totals.values()].filter((t) => t.missing > 0);
  }

  /** An archive gap of a site-hour, if it has one. */
  private archiveGap(r: RowState, hour: string): ArchiveGap | undefined {
    // Held: the stream says what is missing. Not held: only objects that failed and that no other
    // object covers can show a loss.
    const failed = r.badObjects.filter((o) => o.uncovered === undefined || o.uncovered > 0);
    const held = this.held(r.hourIndex);
    if (held ? r.lost === 0 : failed.length === 0) return undefined;
    const gap: ArchiveGap = {
      site: r.site,
      hour,
      where: ARCHIVE,
      missing: held ? r.lost : failed.reduce((n, o) => n + (o.uncovered ?? 0), 0),
      sequences: held
        ? r.lostSample
        : failed
            .flatMap((o) => o.sequences ?? [])
            .sort((a, b) => a - b)
            .slice(0, this.sampleSize),
    };
    if (r.badObjects.length > 0) gap.objects = r.badObjects;
    return gap;
  }

  /** 6. Rows, gaps, what is not done yet, and the totals. */
  private report(
    state: { first_seq: number; last_seq: number; messages: number },
    expected: Map<string, Expected>,
  ): AuditReport {
    const newCell = (hourIndex: number): EngineCell => ({
      compared: this.engineCompared(hourIndex),
      expected: 0,
      found: 0,
      notYet: 0,
      missing: 0,
    });
    const cells = new Map<string, Record<string, EngineCell>>();
    const cellsOf = (site: string, hourIndex: number): Record<string, EngineCell> => {
      this.row(site, hourIndex);
      const key = `${site}${SEP}${hourIndex}`;
      let c = cells.get(key);
      if (!c) cells.set(key, (c = {}));
      return c;
    };
    const gaps: AuditGap[] = [];
    for (const e of this.engines)
      gaps.push(
        ...this.compareEngine(e, expected, (site, hourIndex) => {
          const c = cellsOf(site, hourIndex);
          return (c[e.engine] ??= newCell(hourIndex));
        }),
      );

    const rows: AuditRow[] = [];
    const notYet: NotYet[] = [];
    const sorted = [...this.rows.values()]
      .filter((r) => r.hourIndex >= this.firstHour && r.hourIndex < this.endHour)
      .sort((a, b) => (a.site < b.site ? -1 : a.site > b.site ? 1 : a.hourIndex - b.hourIndex));
    for (const r of sorted) {
      const hour = hourLabel(r.hourIndex);
      const engines = cellsOf(r.site, r.hourIndex);
      for (const e of this.engines) engines[e.engine] ??= newCell(r.hourIndex);
      rows.push({
        site: r.site,
        hour,
        held: this.held(r.hourIndex),
        hub: r.hub,
        // As of the stream's last sequence when the audit began, as the stream is read.
        archive: r.archive?.countUpTo(this.lastSeq) ?? 0,
        archiveObjects: r.archiveObjects,
        archiveLost: r.lost,
        archiveNotYet: r.notYet,
        engines,
      });
      const gap = this.archiveGap(r, hour);
      if (gap) gaps.push(gap);
      if (r.notYet > 0)
        notYet.push({ site: r.site, hour, where: ARCHIVE, count: r.notYet, sequences: r.notYetSample });
      for (const e of this.engines) {
        const count = engines[e.engine]!.notYet;
        if (count > 0) notYet.push({ site: r.site, hour, where: e.engine, count });
      }
    }
    const order = (g: { site: string; hour: string; where: string }): string =>
      [g.site, g.hour, g.where === ARCHIVE ? '' : g.where].join(SEP);
    gaps.sort((a, b) => (order(a) < order(b) ? -1 : order(a) > order(b) ? 1 : 0));

    const engineSummary: AuditReport['summary']['engines'] = {};
    for (const e of this.engines) {
      const s = { expected: 0, found: 0, missing: 0, notYet: 0 };
      for (const r of rows) {
        const c = r.engines[e.engine]!;
        s.found += c.found;
        if (!c.compared) continue;
        s.expected += c.expected;
        s.missing += c.missing;
        s.notYet += c.notYet;
      }
      engineSummary[e.engine] = s;
    }
    const heldFromHour = Number.isFinite(this.heldFromMs)
      ? Math.max(this.firstHour, Math.floor(this.heldFromMs / HOUR_MS) + 1)
      : this.heldFromMs < 0
        ? this.firstHour
        : this.endHour;
    const sum = (f: (r: AuditRow) => number): number => rows.reduce((n, r) => n + f(r), 0);
    return {
      stream: this.options.stream,
      since: new Date(this.sinceMs).toISOString(),
      until: new Date(this.untilMs).toISOString(),
      ...(this.options.site !== undefined ? { site: this.options.site } : {}),
      deep: this.deep,
      streamState: {
        firstSeq: state.first_seq,
        lastSeq: state.last_seq,
        messages: state.messages,
        heldFrom: heldFromHour < this.endHour ? hourLabel(heldFromHour) : null,
      },
      durables: this.durables,
      engines: this.engines.map((e) => e.engine),
      measurements: AUDIT_MEASUREMENTS,
      rows,
      gaps,
      notYet,
      badObjects: this.badObjects,
      summary: {
        siteHours: rows.length,
        heldSiteHours: rows.filter((r) => r.held).length,
        hubMessages: sum((r) => r.hub),
        unparsed: this.unparsed,
        archived: sum((r) => r.archive),
        manifestsRead: this.manifestsRead,
        objectsVerified: this.objectsVerified,
        archiveLost: sum((r) => r.archiveLost),
        archiveNotYet: sum((r) => r.archiveNotYet),
        engines: engineSummary,
        gaps: gaps.length,
      },
    };
  }
}

// ---------------------------------------------------------------------------------------------
// Reading the archive

interface GroupRead {
  /**
   * Per site: the sequences the group holds (its manifests' runs, or with `deep` its verified
   * objects' records) and how many of its objects hold that site.
   */
  sites: Map<string, { ranges: [number, number][]; objects: number }>;
  /** Objects that could not be used; per site they hold, what of it no verified object covers. */
  bad: { object: BadObject; bySite: Map<string, BadObject> }[];
  manifestsRead: number;
  objectsVerified: number;
}

/** A manifest alone; one that disappeared since it was listed is an integrity error too. */
async function readListedManifest(client: S3Client, bucket: string, key: string): Promise<ArchivePart[]> {
  try {
    return (await readManifest(client, bucket, key)).parts;
  } catch (err) {
    if (err instanceof NoSuchKey)
      throw new ArchiveIntegrityError(`${key}: manifest disappeared while the audit listed it`);
    throw err;
  }
}

/** Adds one object's runs of `site` to what a group holds. */
function holds(read: GroupRead, site: string, ranges: Iterable<readonly [number, number]>): void {
  const held = read.sites.get(site) ?? { ranges: [], objects: 0 };
  for (const [from, to] of ranges) held.ranges.push([from, to]);
  held.objects++;
  read.sites.set(site, held);
}

const emptyRead = (): GroupRead => ({ sites: new Map(), bad: [], manifestsRead: 0, objectsVerified: 0 });

/** A bad object whose manifest cannot be read: what it held is unknown, so is its site (`site` objects aside). */
const unknownObject = (group: ArchiveGroup, key: string, reason: string): GroupRead['bad'][number] => {
  const object: BadObject = { key: dataKeyOf(key), manifestKey: key, reason };
  return { object, bySite: new Map(group.site !== undefined ? [[group.site, object]] : []) };
};

async function readGroupManifests(
  client: S3Client,
  bucket: string,
  group: ArchiveGroup,
  site: string | undefined,
): Promise<GroupRead> {
  const read = emptyRead();
  await forEachLimit(group.manifestKeys, 8, async (key) => {
    try {
      const parts = await readListedManifest(client, bucket, key);
      read.manifestsRead++;
      for (const part of parts)
        if (site === undefined || part.site === site) holds(read, part.site, part.seqRanges);
    } catch (err) {
      if (!(err instanceof ArchiveIntegrityError)) throw err;
      read.bad.push(unknownObject(group, key, err.message));
    }
  });
  return read;
}

/**
 * Every object of a group (`site`'s parts only, when given), read and verified against its
 * manifest; its records fed to `onMessage` (the expected points of hours the stream no longer
 * holds). An object that fails is listed with the sequences of its manifest that no verified object
 * of the group holds.
 */
async function readGroupDeep(
  client: S3Client,
  bucket: string,
  group: ArchiveGroup,
  site: string | undefined,
  sampleSize: number,
  onMessage: ((m: PointSource) => void) | undefined,
): Promise<GroupRead> {
  const read = emptyRead();
  const failed: { key: string; reason: string }[] = [];
  await forEachLimit(group.manifestKeys, 2, async (key) => {
    try {
      const { parts } = await readArchiveParts(
        client,
        bucket,
        key,
        (p) => site === undefined || p.site === site,
      );
      read.manifestsRead++;
      read.objectsVerified++;
      for (const { part, records } of parts) {
        holds(
          read,
          part.site,
          records.map((r) => [r.seq, r.seq] as const),
        );
        if (onMessage)
          for (const r of records) {
            const message = archiveRecordMessage(r);
            if (message) onMessage(message);
          }
      }
    } catch (err) {
      if (err instanceof ArchiveIntegrityError) failed.push({ key, reason: err.message });
      else if (err instanceof NoSuchKey)
        failed.push({ key, reason: 'the data object named by this manifest is missing' });
      else throw err;
    }
  });
  const seqs = new SeqSet([...read.sites.values()].flatMap((held) => held.ranges));
  for (const { key, reason } of failed) {
    const parts = await readListedManifest(client, bucket, key).catch((err: unknown) => {
      if (err instanceof ArchiveIntegrityError) return undefined;
      throw err;
    });
    if (!parts) {
      read.bad.push(unknownObject(group, key, reason));
      continue;
    }
    const object: BadObject = { key: dataKeyOf(key), manifestKey: key, reason, uncovered: 0, sequences: [] };
    const bySite = new Map<string, BadObject>();
    for (const part of parts) {
      if (site !== undefined && part.site !== site) continue;
      const seen: BadObject = { ...object, uncovered: 0, sequences: [] };
      for (const [from, to] of unionSeqRanges(part.seqRanges))
        for (let s = from; s <= to; s++)
          if (!seqs.has(s)) {
            if (seen.uncovered! < sampleSize) seen.sequences!.push(s);
            seen.uncovered!++;
          }
      object.uncovered! += seen.uncovered!;
      object.sequences!.push(...seen.sequences!);
      bySite.set(part.site, seen);
    }
    object.sequences = object.sequences!.sort((a, b) => a - b).slice(0, sampleSize);
    read.bad.push({ object, bySite });
  }
  return read;
}

const byKey = (a: BadObject, b: BadObject): number => (a.key < b.key ? -1 : a.key > b.key ? 1 : 0);

/** Runs `work` over `items`, at most `limit` at a time; the first failure stops the rest. */
async function forEachLimit<T>(
  items: readonly T[],
  limit: number,
  work: (item: T) => Promise<void>,
): Promise<void> {
  let next = 0;
  let failed = false;
  const worker = async (): Promise<void> => {
    while (!failed && next < items.length) {
      const item = items[next++]!;
      try {
        await work(item);
      } catch (err) {
        failed = true;
        throw err;
      }
    }
  };
  await Promise.all(Array.from({ length: Math.min(limit, items.length) }, worker));
}
