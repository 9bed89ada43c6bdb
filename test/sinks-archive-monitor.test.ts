/**
 * The archive sink (S3, against s3rver) and the monitor sink (Redis, against redis-server) through
 * the shared Sink conformance suite (test/sink-conformance.ts). Each adapter reads back exactly
 * what its store holds for a site — the archive's records by stream sequence, through verified
 * manifests; the monitor's unit hashes, alarms, site counts, indexes and change entries — and
 * computes what that must be from the messages alone. Neither sink has bad data: both declare it,
 * with the reason, instead of faking a rejection.
 */
import type { S3Client } from '@aws-sdk/client-s3';
import { Registry } from 'prom-client';
import { createClient, type RedisClientType } from 'redis';
import { DEFAULT_ARCHIVE_PREFIX, recordPayload, receivedAtMs } from '../cloud/archive/layout.ts';
import { createS3Client, listManifests, readArchiveObject } from '../cloud/archive/s3.ts';
import { monitorKeys, STATUS_FIELDS, TELEMETRY_FIELDS } from '../cloud/monitor/keys.ts';
import type { SinkMessage } from '../cloud/sink.ts';
import { S3ArchiveSink } from '../cloud/sinks/s3-archive.ts';
import { RedisMonitorSink } from '../cloud/sinks/redis-monitor.ts';
import { silentLogger } from '../lib/log.ts';
import { decodePayload, severityOf, type Evt1Alarm } from '../schemas/index.ts';
import { killServer } from '../stack/servers.ts';
import { sinkConformance } from './sink-conformance.ts';
import { TestServers } from './support/servers.ts';

type Row = Record<string, unknown>;

/** Rows sorted by their JSON (keys sorted first): a canonical form for deepEqual. */
function canonical(rows: Row[]): Row[] {
  const sorted = rows.map((r) => Object.fromEntries(Object.entries(r).sort(([a], [b]) => (a < b ? -1 : 1))));
  return sorted.sort((a, b) => (JSON.stringify(a) < JSON.stringify(b) ? -1 : 1));
}

// ---------------------------------------------------------------------------------------------
// Archive: every record of a site, once per object it is in, payload bytes as base64

const BUCKET = 'switchyard';
const ARCHIVE_PREFIX = `conformance-${DEFAULT_ARCHIVE_PREFIX}`;

/** What the archive must hold for `messages`: one record each, bytes exactly as sent. */
const archiveRecords = (messages: readonly SinkMessage[]): Row[] =>
  canonical(
    messages.map((m) => ({
      seq: m.seq,
      subject: m.subject,
      time: new Date(m.storedAtMs).toISOString(),
      headers: m.headers,
      payload: Buffer.from(m.payload).toString('base64'),
    })),
  );

/** Every record under the site's prefix, read through its manifest (sha256 and count checked). */
async function readArchive(s3: S3Client, site: string): Promise<Row[]> {
  const rows: Row[] = [];
  for (const key of await listManifests(s3, BUCKET, `${ARCHIVE_PREFIX}site=${site}/`)) {
    const { manifest, records } = await readArchiveObject(s3, BUCKET, key);
    if (manifest.site !== site) throw new Error(`${key}: manifest of site ${manifest.site}`);
    for (const r of records)
      rows.push({
        seq: r.seq,
        subject: r.subject,
        time: r.time,
        headers: r.headers,
        payload: Buffer.from(recordPayload(r)).toString('base64'),
      });
  }
  return canonical(rows);
}

sinkConformance(
  'archive sink (s3rver)',
  async () => {
    const servers = new TestServers('sink-s3');
    let s3server = await servers.s3([BUCKET]);
    const settings = {
      s3Endpoint: s3server.url,
      s3Region: 'us-east-1',
      s3AccessKeyId: 'S3RVER',
      s3SecretAccessKey: 'S3RVER',
      s3ForcePathStyle: true,
    };
    const reader = createS3Client(settings);
    const sink = new S3ArchiveSink({
      ...settings,
      s3Bucket: BUCKET,
      s3Prefix: ARCHIVE_PREFIX,
      putConcurrency: 8,
      gzipLevel: 6,
      s3RequestTimeoutMs: 5_000,
      consumer: 'archive',
      stream: 'BSU',
      log: silentLogger,
      registry: new Registry(),
    });
    await sink.open();
    return {
      sink,
      readBack: (site) => readArchive(reader, site),
      expected: archiveRecords,
      rejectsUndecodable: false,
      // s3rver keeps each object in files of its own: a SIGKILL loses nothing it answered 200 for.
      kill: async () => {
        await killServer(s3server);
        return async () => void (s3server = await servers.restart(s3server));
      },
      stop: async () => {
        reader.destroy();
        await servers.stopAll();
      },
    };
  },
  { noBadData: 'the archive keeps every payload as sent, invalid ones included' },
);

// ---------------------------------------------------------------------------------------------
// Monitor: the state of every unit of a site, and what was announced about it

const PREFIX = 'conformance:';
const keys = monitorKeys(PREFIX);

/** The monitor's whole footprint for one site, canonical. */
async function readMonitor(redis: RedisClientType, site: string): Promise<Row[]> {
  const rows: Row[] = [];
  const seen = await redis.zRangeWithScores(keys.siteLastSeen(site), 0, -1);
  for (const { value: device, score } of seen) {
    rows.push({ key: 'unit', ...(await redis.hGetAll(keys.unit(site, device))) });
    const alarms = await redis.hGetAll(keys.alarms(site, device));
    if (Object.keys(alarms).length > 0) rows.push({ key: 'alarms', device, ...alarms });
    rows.push({ key: 'lastseen', device, score });
    const global = await redis.zScore(keys.lastSeen, `${site}:${device}`);
    if (global !== null) rows.push({ key: 'lastseen-all', device, score: global });
    const online = await redis.zScore(keys.online, `${site}:${device}`);
    if (online !== null) rows.push({ key: 'online', device, score: online });
  }
  const counts = await redis.hGetAll(keys.site(site));
  if (Object.keys(counts).length > 0) rows.push({ key: 'site', ...counts });
  if (await redis.sIsMember(keys.sites, site)) rows.push({ key: 'sites', site });
  for (const entry of await redis.xRange(keys.changes, '-', '+')) {
    const c = entry.message;
    if (c.site !== site) continue;
    rows.push({ key: 'change', ...c });
  }
  return canonical(rows);
}

interface UnitModel {
  hash: Record<string, string>;
  alarms: Map<string, { ts: number; seq: number; action: string; severity: string }>;
  lastSeenMs: number;
}

/**
 * What the monitor must hold after `messages`, worked out from the messages and the documented
 * rules (docs/consumers.md): each field group moves only to a later (device time, stream seq);
 * a payload that does not decode only marks its unit as heard from; health is faulted on State
 * FAULT or an active alarm of severity `alarm`, else online (offlineAfterMs is far away here);
 * a change is announced when State, ChaSt, firmware, an alarm or the health changes.
 */
function monitorState(messages: readonly SinkMessage[]): Row[] {
  const units = new Map<string, UnitModel>();
  const changes: Row[] = [];
  const newer = (ts: number, seq: number, oldTs?: string, oldSeq?: string): boolean =>
    oldTs === undefined ? true : ts !== Number(oldTs) ? ts > Number(oldTs) : seq > Number(oldSeq ?? -1);
  for (const m of messages) {
    const id = `${m.site}:${m.device}`;
    let unit = units.get(id);
    if (!unit) {
      unit = { hash: { site: m.site, device: m.device }, alarms: new Map(), lastSeenMs: 0 };
      units.set(id, unit);
    }
    const h = unit.hash;
    const announce = (change: string, from: string, to: string, tsMs: number): void =>
      void changes.push({
        key: 'change',
        unit: id,
        site: m.site,
        device: m.device,
        change,
        from,
        to,
        tsMs: String(tsMs),
        seq: String(m.seq),
      });
    const decoded = m.kind === 'invalid' ? undefined : decodePayload(m.kind, m.payload);
    const seen = receivedAtMs(m);
    if (decoded?.ok) {
      const { tsMs: ts } = decoded;
      const value = decoded.value as Record<string, unknown>;
      const pick = (names: readonly string[]): void => {
        for (const name of names) {
          const v = value[name];
          if (typeof v === 'number' || typeof v === 'string') h[name] = String(v);
        }
      };
      if (decoded.kind === 'telemetry' && newer(ts, m.seq, h.telemetryTsMs, h.telemetrySeq)) {
        Object.assign(h, { telemetryTsMs: String(ts), telemetrySeq: String(m.seq) });
        pick(TELEMETRY_FIELDS);
      } else if (decoded.kind === 'status' && newer(ts, m.seq, h.statusTsMs, h.statusSeq)) {
        const before = { State: h.State, ChaSt: h.ChaSt, firmware: h.firmware };
        Object.assign(h, { statusTsMs: String(ts), statusSeq: String(m.seq) });
        pick(STATUS_FIELDS);
        for (const name of ['State', 'ChaSt', 'firmware'] as const)
          if (value[name] !== undefined && h[name] !== before[name])
            announce(name, before[name] ?? '', h[name]!, ts);
      } else if (decoded.kind === 'event') {
        const { alarm, action, severity } = decoded.value;
        const held = unit.alarms.get(alarm);
        if (newer(ts, m.seq, held && String(held.ts), held && String(held.seq))) {
          unit.alarms.set(alarm, {
            ts,
            seq: m.seq,
            action,
            severity: severity ?? severityOf(alarm as Evt1Alarm),
          });
          if (action !== (held?.action ?? 'cleared'))
            announce(`alarm:${alarm}`, held?.action ?? '', action, ts);
          const active = [...unit.alarms].filter(([, a]) => a.action === 'raised');
          h.alarms = JSON.stringify(active.map(([name]) => name).sort());
          h.activeAlarms = String(active.length);
          h.severeAlarms = String(active.filter(([, a]) => a.severity === 'alarm').length);
          if (h.eventTsMs === undefined || ts > Number(h.eventTsMs)) h.eventTsMs = String(ts);
        }
      }
    }
    if (seen > unit.lastSeenMs) unit.lastSeenMs = seen;
    h.lastSeenMs = String(unit.lastSeenMs);
    if (h.lastSeq === undefined || m.seq > Number(h.lastSeq)) h.lastSeq = String(m.seq);
    const health = h.State === 'FAULT' || Number(h.severeAlarms ?? 0) > 0 ? 'faulted' : 'online';
    if (h.health !== health) announce('health', h.health ?? '', health, seen);
    h.health = health;
  }
  const rows: Row[] = [...changes];
  const bySite = new Map<string, Record<string, number>>();
  for (const unit of units.values()) {
    const { site, device, health } = unit.hash as { site: string; device: string; health: string };
    rows.push({ key: 'unit', ...unit.hash });
    if (unit.alarms.size > 0)
      rows.push({
        key: 'alarms',
        device,
        ...Object.fromEntries(
          [...unit.alarms].map(([name, a]) => [name, `${a.ts}|${a.seq}|${a.action}|${a.severity}`]),
        ),
      });
    rows.push({ key: 'lastseen', device, score: unit.lastSeenMs });
    rows.push({ key: 'lastseen-all', device, score: unit.lastSeenMs });
    rows.push({ key: 'online', device, score: unit.lastSeenMs });
    const counts = bySite.get(site) ?? { units: 0, online: 0, offline: 0, faulted: 0 };
    counts.units! += 1;
    counts[health]! += 1;
    bySite.set(site, counts);
  }
  for (const [site, counts] of bySite) {
    rows.push({ key: 'site', ...Object.fromEntries(Object.entries(counts).map(([k, v]) => [k, String(v)])) });
    rows.push({ key: 'sites', site });
  }
  return canonical(rows);
}

sinkConformance(
  'monitor sink (Redis)',
  async () => {
    const servers = new TestServers('sink-redis');
    let redisServer = await servers.redis();
    const connectReader = async (): Promise<RedisClientType> => {
      const client: RedisClientType = createClient({ url: redisServer.url });
      client.on('error', () => undefined);
      await client.connect();
      return client;
    };
    let reader = await connectReader();
    const sink = new RedisMonitorSink({
      redisUrl: redisServer.url,
      redisKeyPrefix: PREFIX,
      // Health is then only ever online or faulted while the suite runs: its state is exact.
      offlineAfterMs: 3_600_000,
      sweepIntervalMs: 5_000,
      changesMaxLen: 100_000,
      consumer: 'monitor',
      log: silentLogger,
      registry: new Registry(),
    });
    await sink.open();
    return {
      sink,
      readBack: async (site) => {
        if (!reader.isReady) {
          reader.destroy();
          reader = await connectReader();
        }
        return readMonitor(reader, site);
      },
      expected: monitorState,
      rejectsUndecodable: false,
      // Redis runs with an append-only file (stack/servers.ts): a SIGKILL loses nothing it answered.
      kill: async () => {
        await killServer(redisServer);
        return async () => void (redisServer = await servers.restart(redisServer));
      },
      stop: async () => {
        reader.destroy();
        await servers.stopAll();
      },
    };
  },
  {
    noBadData:
      'the monitor counts an undecodable payload and marks its unit as heard from; the archive keeps it',
  },
);
