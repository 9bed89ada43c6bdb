/**
 * What the console shows, read once per refresh interval and shared by every viewer: the fleet
 * (Redis per-site counters, the hub's sourcing), the pipeline (the hub's durables, presence, the
 * engine swap's records, the dead-letter stream). A page or API call only reads the cached
 * snapshot, so the work of the console depends on the fleet's size, never on how many look.
 *
 * Reads are bounded: Redis is read through pipelines of per-site keys (`bsu:sites`, `site:<s>`,
 * `lastseen:<s>`), never KEYS or SCAN; the hub answers one stream info and one consumer list per
 * refresh; per-subject counts (message rates, invalid share) are heavier at fleet scale and are
 * read on their own, slower cadence (`countsIntervalMs`).
 */
import { DeliverPolicy, jetstream, type ConsumerInfo, type JetStreamManager } from '@nats-io/jetstream';
import { Kvm, type KvEntry } from '@nats-io/kv';
import type { NatsConnection } from '@nats-io/transport-node';
import type { RedisClientType } from 'redis';
import { describeError } from '../../lib/errors.ts';
import type { Logger } from '../../lib/log.ts';
import { isStreamNotFound } from '../../lib/nats.ts';
import { Header } from '../../schemas/headers.ts';
import { SUBJECT_ROOT } from '../../schemas/subjects.ts';
import { CONTROL_BUCKET, PRESENCE_BUCKET, PRESENCE_TTL_MS, type Presence } from '../control.ts';
import { reasonClassOf, type DeadLetterSummary } from '../dlq-admin.ts';
import { listSites, pausedSites } from '../hub-stream.ts';
import type { MigrationRecord } from '../migrate.ts';
import { monitorKeys, UnitField, type MonitorKeys } from '../monitor/keys.ts';

/** How a site looks at a glance. */
export const SiteStatus = {
  ok: 'ok',
  /** The hub is behind on it, or has not heard from its streams for a while. */
  lagging: 'lagging',
  /** No unit of it was heard from for `staleAfterMs`. */
  silent: 'silent',
} as const;
export type SiteStatus = (typeof SiteStatus)[keyof typeof SiteStatus];

/** One row of the fleet table (and of `/api/fleet`). */
export interface SiteRow {
  site: string;
  status: SiteStatus;
  /** Units the monitor knows, and how many of them are online, offline, faulted. */
  units: number;
  online: number;
  offline: number;
  faulted: number;
  /** Receive time of the newest message of any unit of the site (epoch ms); null if none. */
  lastReadingMs: number | null;
  /** How long ago the hub last heard from the site's streams (ms); null if never or not sourced. */
  lastContactAgoMs: number | null;
  /** Messages the hub has yet to source from the site; null if the hub does not source it. */
  hubLag: number | null;
  /** Messages per second the hub stored for the site, over the last counts interval. */
  messagesPerS: number | null;
  /** Share (0–1) of those kept aside as invalid by the bridge. */
  invalidShare: number | null;
  /** Why the status is not ok. */
  reasons: string[];
}

export interface FleetSnapshot {
  /** When the snapshot was taken (epoch ms). */
  takenAtMs: number;
  /** How long taking it took (ms). */
  refreshMs: number;
  sites: SiteRow[];
  totals: { sites: number; units: number; online: number; offline: number; faulted: number; stale: number };
  /** Sources that could not be read this time (the rest of the snapshot is still shown). */
  errors: string[];
}

/** One durable of the hub stream, as the pipeline page shows it. */
export interface ConsumerRow {
  durable: string;
  /** Messages not delivered yet (`num_pending`): the consumer's lag. */
  lag: number;
  ackPending: number;
  redelivered: number;
  /** Messages acknowledged per second since the previous refresh; null on the first. */
  ackedPerS: number | null;
  /** Dead letters it left in the dead-letter stream (as of the last counts read). */
  deadLetters: number;
  /** Instances announced in the presence bucket within its TTL. */
  instances: Presence[];
  ready: boolean;
}

export interface PipelineSnapshot {
  takenAtMs: number;
  stream: { name: string; messages: number; bytes: number; lastSeq: number } | null;
  consumers: ConsumerRow[];
  /** Engine swaps recorded by `switchyard migrate start` (control bucket `migrate.*`). */
  migrations: MigrationRecord[];
  deadLetters: { total: number; byConsumer: Record<string, number> };
  /** `switchyard audit` keeps no record of its runs: always null for now. */
  lastAudit: null;
  errors: string[];
}

export interface DeadLetterSnapshot {
  takenAtMs: number;
  total: number;
  /** The newest dead letters, newest first, at most `deadLetterLimit`. */
  letters: DeadLetterSummary[];
  errors: string[];
}

export interface SnapshotOptions {
  redis: RedisClientType;
  nc: NatsConnection;
  jsm: JetStreamManager;
  keyPrefix: string;
  stream: string;
  dlqStream: string;
  staleAfterMs: number;
  lagWarnMessages: number;
  countsIntervalMs: number;
  deadLetterLimit: number;
  log: Logger;
  now?: () => number;
}

/** Sites per Redis pipeline: a few thousand commands per round trip at most. */
const SITES_PER_PIPELINE = 500;

const num = (v: string | undefined): number => (v === undefined ? 0 : Number(v) || 0);

interface Counts {
  atMs: number;
  bySite: Map<string, { total: number; invalid: number }>;
  deadLetters: Map<string, number>;
}

/** Takes the snapshots; `refresh()` once per interval, the getters at any time. */
export class SnapshotSource {
  private readonly keys: MonitorKeys;
  private readonly now: () => number;
  fleet: FleetSnapshot;
  pipeline: PipelineSnapshot;
  deadLetters: DeadLetterSnapshot;
  private counts: Counts | undefined;
  private rates = new Map<string, { perS: number; invalidShare: number | null }>();
  private lastAcked = new Map<string, { atMs: number; seq: number }>();
  private refreshing: Promise<void> | undefined;

  constructor(private readonly o: SnapshotOptions) {
    this.keys = monitorKeys(o.keyPrefix);
    this.now = o.now ?? Date.now;
    const empty = { takenAtMs: 0, errors: ['not read yet'] };
    this.fleet = {
      ...empty,
      refreshMs: 0,
      sites: [],
      totals: { sites: 0, units: 0, online: 0, offline: 0, faulted: 0, stale: 0 },
    };
    this.pipeline = {
      ...empty,
      stream: null,
      consumers: [],
      migrations: [],
      deadLetters: { total: 0, byConsumer: {} },
      lastAudit: null,
    };
    this.deadLetters = { ...empty, total: 0, letters: [] };
  }

  /** Refreshes every snapshot; concurrent calls share one refresh. */
  refresh(): Promise<void> {
    this.refreshing ??= this.refreshAll().finally(() => {
      this.refreshing = undefined;
    });
    return this.refreshing;
  }

  private async refreshAll(): Promise<void> {
    const t0 = performance.now();
    const due = !this.counts || this.now() - this.counts.atMs >= this.o.countsIntervalMs;
    const countErrors: string[] = [];
    if (due)
      await this.readCounts().catch((err) => countErrors.push(`subject counts: ${describeError(err)}`));
    const [fleet, pipeline, deadLetters] = await Promise.all([
      this.readFleet(),
      this.readPipeline(),
      this.readDeadLetters(),
    ]);
    fleet.errors.push(...countErrors);
    fleet.refreshMs = Math.round(performance.now() - t0);
    this.fleet = fleet;
    this.pipeline = pipeline;
    this.deadLetters = deadLetters;
  }

  /** Per-subject counts of the hub stream and the DLQ, turned into per-site rates. */
  private async readCounts(): Promise<void> {
    const atMs = this.now();
    const bySite = new Map<string, { total: number; invalid: number }>();
    // No hub stream yet: no site was ever added, nothing to count.
    const hub = await this.o.jsm.streams
      .info(this.o.stream, { subjects_filter: `${SUBJECT_ROOT}.>` })
      .catch((err: unknown) => {
        if (isStreamNotFound(err)) return undefined;
        throw err;
      });
    for (const [subject, n] of Object.entries(hub?.state.subjects ?? {})) {
      const [, site, , kind] = subject.split('.');
      if (!site) continue;
      const entry = bySite.get(site) ?? { total: 0, invalid: 0 };
      entry.total += n;
      if (kind === 'invalid') entry.invalid += n;
      bySite.set(site, entry);
    }
    const deadLetters = new Map<string, number>();
    try {
      const dlq = await this.o.jsm.streams.info(this.o.dlqStream, { subjects_filter: '>' });
      for (const [subject, n] of Object.entries(dlq.state.subjects ?? {})) {
        const consumer = subject.split('.')[1] ?? '';
        deadLetters.set(consumer, (deadLetters.get(consumer) ?? 0) + n);
      }
    } catch (err) {
      if (!isStreamNotFound(err)) throw err;
    }
    const previous = this.counts;
    this.counts = { atMs, bySite, deadLetters };
    if (!previous) return;
    const seconds = (atMs - previous.atMs) / 1000;
    const rates = new Map<string, { perS: number; invalidShare: number | null }>();
    for (const [site, now] of bySite) {
      const before = previous.bySite.get(site) ?? { total: 0, invalid: 0 };
      // Messages the stream's limits removed meanwhile make a difference negative: none then.
      const added = Math.max(0, now.total - before.total);
      const invalid = Math.max(0, now.invalid - before.invalid);
      rates.set(site, { perS: added / seconds, invalidShare: added > 0 ? invalid / added : null });
    }
    this.rates = rates;
  }

  private async readFleet(): Promise<FleetSnapshot> {
    const takenAtMs = this.now();
    const errors: string[] = [];
    const { redis } = this.o;
    const keys = this.keys;
    const redisSites = await redis.sMembers(keys.sites).catch((err: unknown) => {
      errors.push(`redis: ${describeError(err)}`);
      return [] as string[];
    });
    const hubSites = await pausedSites(this.o.nc)
      .then((paused) => listSites(this.o.jsm, paused))
      .catch((err: unknown) => {
        errors.push(`hub sources: ${describeError(err)}`);
        return undefined;
      });
    const hubBySite = new Map((hubSites ?? []).map((s) => [s.site, s]));
    const names = [...new Set([...redisSites, ...hubBySite.keys()])].sort((a, b) =>
      a.localeCompare(b, undefined, { numeric: true }),
    );
    const state = new Map<string, { counts: Record<string, string>; lastMs: number | null }>();
    try {
      for (let i = 0; i < names.length; i += SITES_PER_PIPELINE) {
        const chunk = names.slice(i, i + SITES_PER_PIPELINE);
        const pipeline = redis.multi();
        for (const site of chunk)
          pipeline.hGetAll(keys.site(site)).zRangeWithScores(keys.siteLastSeen(site), -1, -1);
        const replies = (await pipeline.execAsPipeline()) as unknown[];
        chunk.forEach((site, j) => {
          const counts = replies[2 * j] as Record<string, string>;
          const newest = replies[2 * j + 1] as { value: string; score: number }[];
          state.set(site, { counts, lastMs: newest[0]?.score ?? null });
        });
      }
    } catch (err) {
      errors.push(`redis: ${describeError(err)}`);
    }
    const sites = names.map((site): SiteRow => {
      const s = state.get(site);
      const hub = hubBySite.get(site);
      const rate = this.rates.get(site);
      const row: SiteRow = {
        site,
        status: SiteStatus.ok,
        units: num(s?.counts.units),
        online: num(s?.counts.online),
        offline: num(s?.counts.offline),
        faulted: num(s?.counts.faulted),
        lastReadingMs: s?.lastMs ?? null,
        lastContactAgoMs: hub?.lastContactMs ?? null,
        hubLag: hub ? hub.lag : null,
        messagesPerS: rate ? Math.round(rate.perS * 10) / 10 : null,
        invalidShare: rate?.invalidShare ?? null,
        reasons: [],
      };
      const silentForMs = row.lastReadingMs === null ? Infinity : takenAtMs - row.lastReadingMs;
      if (silentForMs > this.o.staleAfterMs)
        row.reasons.push(
          row.lastReadingMs === null
            ? 'no unit heard from'
            : `silent for ${Math.round(silentForMs / 1000)} s`,
        );
      if (hub?.paused) row.reasons.push('paused at the hub (switchyard site resume)');
      else if (hub && (hub.lastContactMs === undefined || hub.lastContactMs > this.o.staleAfterMs))
        row.reasons.push(
          hub.lastContactMs === undefined
            ? 'hub never heard from its streams'
            : `hub last heard from it ${Math.round(hub.lastContactMs / 1000)} s ago`,
        );
      if (hub && hub.lag > this.o.lagWarnMessages) row.reasons.push(`hub lag ${hub.lag} messages`);
      for (const stream of hub?.streams ?? [])
        if (stream.error) row.reasons.push(`${stream.name}: ${stream.error}`);
      if (!hub && hubSites) row.reasons.push('not sourced by the hub');
      if (row.reasons.length > 0)
        row.status = silentForMs > this.o.staleAfterMs ? SiteStatus.silent : SiteStatus.lagging;
      return row;
    });
    const totals = { sites: sites.length, units: 0, online: 0, offline: 0, faulted: 0, stale: 0 };
    for (const row of sites) {
      totals.units += row.units;
      totals.online += row.online;
      totals.offline += row.offline;
      totals.faulted += row.faulted;
      if (row.status !== SiteStatus.ok) totals.stale++;
    }
    return { takenAtMs, refreshMs: 0, sites, totals, errors };
  }

  private async readPipeline(): Promise<PipelineSnapshot> {
    const takenAtMs = this.now();
    const errors: string[] = [];
    const { jsm, nc } = this.o;
    let stream: PipelineSnapshot['stream'] = null;
    try {
      const info = await jsm.streams.info(this.o.stream);
      stream = {
        name: this.o.stream,
        messages: info.state.messages,
        bytes: info.state.bytes,
        lastSeq: info.state.last_seq,
      };
    } catch (err) {
      errors.push(
        isStreamNotFound(err)
          ? `stream ${this.o.stream} does not exist yet: no site was added to the hub`
          : `stream ${this.o.stream}: ${describeError(err)}`,
      );
    }
    const infos: ConsumerInfo[] = [];
    if (stream)
      try {
        for await (const info of jsm.consumers.list(this.o.stream)) infos.push(info);
      } catch (err) {
        errors.push(`consumers: ${describeError(err)}`);
      }
    const presence = new Map<string, Presence[]>();
    const migrations: MigrationRecord[] = [];
    const kvm = new Kvm(nc);
    // Each bucket exists once a consumer ran (presence) or a swap started (control): none is news.
    const readBucket = async (bucket: string, filter: string, take: (entry: KvEntry) => void) => {
      try {
        const kv = await kvm.open(bucket);
        for await (const key of await kv.keys(filter)) {
          const entry = await kv.get(key);
          if (entry?.operation === 'PUT') take(entry);
        }
      } catch (err) {
        if (!isStreamNotFound(err)) errors.push(`${bucket}: ${describeError(err)}`);
      }
    };
    await readBucket(PRESENCE_BUCKET, '>', (entry) => {
      if (takenAtMs - entry.created.getTime() >= PRESENCE_TTL_MS) return;
      const p = entry.json<Presence>();
      presence.set(p.durable, [...(presence.get(p.durable) ?? []), p]);
    });
    await readBucket(CONTROL_BUCKET, 'migrate.>', (entry) => migrations.push(entry.json<MigrationRecord>()));
    const deadLetters = this.counts?.deadLetters ?? new Map<string, number>();
    const consumers = infos
      .filter((info) => info.config.durable_name)
      .map((info): ConsumerRow => {
        const durable = info.name;
        const seq = info.ack_floor.consumer_seq;
        const before = this.lastAcked.get(durable);
        this.lastAcked.set(durable, { atMs: takenAtMs, seq });
        const seconds = before ? (takenAtMs - before.atMs) / 1000 : 0;
        const instances = presence.get(durable) ?? [];
        return {
          durable,
          lag: info.num_pending,
          ackPending: info.num_ack_pending,
          redelivered: info.num_redelivered,
          ackedPerS:
            before && seconds > 0 ? Math.round((Math.max(0, seq - before.seq) / seconds) * 10) / 10 : null,
          deadLetters: deadLetters.get(durable) ?? 0,
          instances,
          ready: instances.length > 0,
        };
      })
      .sort((a, b) => a.durable.localeCompare(b.durable));
    let total = 0;
    for (const n of deadLetters.values()) total += n;
    return {
      takenAtMs,
      stream,
      consumers,
      migrations,
      deadLetters: { total, byConsumer: Object.fromEntries(deadLetters) },
      lastAudit: null,
      errors,
    };
  }

  /** The newest dead letters, headers only, through an ordered consumer started near the end. */
  private async readDeadLetters(): Promise<DeadLetterSnapshot> {
    const takenAtMs = this.now();
    const { jsm, nc, dlqStream, deadLetterLimit } = this.o;
    let state;
    try {
      state = (await jsm.streams.info(dlqStream)).state;
    } catch (err) {
      if (isStreamNotFound(err)) return { takenAtMs, total: 0, letters: [], errors: [] };
      return { takenAtMs, total: 0, letters: [], errors: [`${dlqStream}: ${describeError(err)}`] };
    }
    if (state.messages === 0) return { takenAtMs, total: 0, letters: [], errors: [] };
    // Unchanged since the last read: the list in hand is still right.
    if (this.deadLetters.total === state.messages && this.deadLetters.letters[0]?.dlqSeq === state.last_seq)
      return { ...this.deadLetters, takenAtMs };
    const letters: DeadLetterSummary[] = [];
    try {
      const consumer = await jetstream(nc).consumers.get(dlqStream, {
        deliver_policy: DeliverPolicy.StartSequence,
        opt_start_seq: Math.max(state.first_seq, state.last_seq - deadLetterLimit + 1),
        headers_only: true,
      });
      const iter = await consumer.fetch({ max_messages: deadLetterLimit, expires: 2_000 });
      for await (const msg of iter) {
        const h = msg.headers;
        const get = (key: string): string => (h?.has(key) ? h.get(key) : '');
        const tokens = msg.subject.split('.');
        const reason = get(Header.dlqReason);
        const seq = Number(get(Header.dlqSeq));
        const deliveries = Number(get(Header.dlqDeliveries));
        letters.push({
          dlqSeq: msg.seq,
          dlqSubject: msg.subject,
          consumer: get(Header.dlqConsumer) || (tokens[1] ?? ''),
          stream: get(Header.dlqStream),
          seq: get(Header.dlqSeq) !== '' && Number.isSafeInteger(seq) ? seq : undefined,
          subject: get(Header.dlqSubject) || tokens.slice(2).join('.'),
          reason,
          reasonClass: reasonClassOf(reason),
          deliveries:
            get(Header.dlqDeliveries) !== '' && Number.isSafeInteger(deliveries) ? deliveries : undefined,
          deadLetteredAt: new Date(Math.floor(msg.info.timestampNanos / 1e6)).toISOString(),
          payloadBytes: h?.has('Nats-Msg-Size') ? Number(h.get('Nats-Msg-Size')) : 0,
        });
        if (msg.seq >= state.last_seq || msg.info.pending === 0) {
          iter.stop();
          break;
        }
      }
    } catch (err) {
      return { takenAtMs, total: state.messages, letters, errors: [`${dlqStream}: ${describeError(err)}`] };
    }
    letters.reverse();
    return { takenAtMs, total: state.messages, letters, errors: [] };
  }
}

/** A unit of a site, as the site page shows it. */
export interface UnitRow {
  device: string;
  health: string;
  state: string;
  chargeState: string;
  socPct: number | null;
  powerW: number | null;
  alarms: string[];
  /** Receive time of its newest message (epoch ms). */
  lastSeenMs: number | null;
  /** Device time of its newest reading (epoch ms). */
  lastReadingMs: number | null;
}

const numOrNull = (v: string | undefined): number | null =>
  v === undefined || v === '' || !Number.isFinite(Number(v)) ? null : Number(v);

/** The units of one site: one sorted-set read and one pipelined HGETALL per unit. */
export async function readSiteUnits(
  redis: RedisClientType,
  keyPrefix: string,
  site: string,
): Promise<UnitRow[]> {
  const keys = monitorKeys(keyPrefix);
  const devices = await redis.zRange(keys.siteLastSeen(site), 0, -1);
  if (devices.length === 0) return [];
  const pipeline = redis.multi();
  for (const device of devices) pipeline.hGetAll(keys.unit(site, device));
  const hashes = (await pipeline.execAsPipeline()) as unknown as Record<string, string>[];
  return devices
    .map((device, i): UnitRow => {
      const h = hashes[i] ?? {};
      let alarms: string[] = [];
      const alarmList = h[UnitField.alarms];
      try {
        alarms = alarmList ? (JSON.parse(alarmList) as string[]) : [];
      } catch {
        alarms = [];
      }
      return {
        device,
        health: h[UnitField.health] ?? '',
        state: h[UnitField.State] ?? '',
        chargeState: h[UnitField.ChaSt] ?? '',
        socPct: numOrNull(h[UnitField.SoC]),
        powerW: numOrNull(h[UnitField.W]),
        alarms,
        lastSeenMs: numOrNull(h[UnitField.lastSeenMs]),
        lastReadingMs: numOrNull(h[UnitField.telemetryTsMs]),
      };
    })
    .sort((a, b) => a.device.localeCompare(b.device, undefined, { numeric: true }));
}
