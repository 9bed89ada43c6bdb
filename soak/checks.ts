/**
 * The soak's verdict: every reading the devices sent, compared with what reached the hub (BSU), the
 * archive (S3), the monitor (Redis) and both engines. A reading is known by its device and the sha1
 * of its payload bytes, which the pipeline keeps byte for byte.
 */
import { createHash } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { jetstream, type JsMsg } from '@nats-io/jetstream';
import type { NatsConnection } from '@nats-io/transport-node';
import { createClient } from 'redis';
import { listManifests, readArchiveObject, createS3Client } from '../cloud/archive/s3.ts';
import { createEngineReader } from '../cloud/ingest/readers/index.ts';
import { monitorKeys } from '../cloud/monitor/keys.ts';
import { redisClientOptions } from '../lib/redis.ts';
import { Header } from '../schemas/headers.ts';
import { parseSubject } from '../schemas/subjects.ts';
import type { Stack } from '../stack/stack-file.ts';

/** One message a device handed to its broker and the broker acknowledged. */
export interface SentMessage {
  site: string;
  device: string;
  kind: string;
  payload: Uint8Array;
  /** Spoiled on purpose (bad or oversized): the bridge must keep it as kind `invalid`. */
  invalid: boolean;
  /** When the broker acknowledged it (ms since the epoch). */
  sentAtMs: number;
}

/** The site streams' de-duplication window (the bridge's `duplicateWindowS` default). */
const DUPLICATE_WINDOW_MS = 900_000;

/**
 * How many invalid messages the bridge keeps for `sent`: its id is a hash of topic and bytes, so
 * byte-identical garbage from one device within the de-duplication window is one piece of evidence,
 * stored once (docs/edge.md), e.g. two readings of one device cut short after the same few bytes.
 */
export function invalidKept(sent: readonly SentMessage[], windowMs = DUPLICATE_WINDOW_MS): number {
  const lastStoredAt = new Map<string, number>();
  let kept = 0;
  for (const s of [...sent].filter((x) => x.invalid).sort((x, y) => x.sentAtMs - y.sentAtMs)) {
    const key = `${s.kind}|${keyOf(s.device, s.payload)}`;
    const stored = lastStoredAt.get(key);
    if (stored !== undefined && s.sentAtMs - stored < windowMs) continue;
    lastStoredAt.set(key, s.sentAtMs);
    kept++;
  }
  return kept;
}

export const keyOf = (device: string, payload: Uint8Array): string =>
  `${device}|${createHash('sha1').update(payload).digest('hex')}`;

export interface CheckResult {
  name: string;
  ok: boolean;
  /** What was compared (counts). */
  figures: Record<string, number>;
  /** What differs, a few examples at most. */
  problems: string[];
}

interface HubMessage {
  seq: number;
  site: string;
  device: string;
  kind: string;
  payload: Uint8Array;
  reason?: string;
  originalBytes?: number;
}

/** Every message BSU holds, read with an ordered consumer. */
export async function readHub(nc: NatsConnection): Promise<HubMessage[]> {
  const js = jetstream(nc);
  const consumer = await js.consumers.get('BSU');
  const out: HubMessage[] = [];
  const info = await consumer.info(true);
  const pending = info.num_pending;
  if (pending === 0) return out;
  const messages = await consumer.consume();
  for await (const m of messages as AsyncIterable<JsMsg>) {
    const parts = parseSubject(m.subject);
    if (parts)
      out.push({
        seq: m.seq,
        site: parts.site,
        device: parts.device,
        kind: parts.kind,
        payload: m.data,
        ...(m.headers?.get(Header.invalidReason) ? { reason: m.headers.get(Header.invalidReason) } : {}),
      });
    if (m.info.pending === 0) break;
  }
  await messages.close();
  return out;
}

const few = (xs: string[]): string[] => xs.slice(0, 5);

/** Valid readings: each exactly once at the hub. Invalid ones: kept as `invalid` with a reason. */
export function checkHub(sent: readonly SentMessage[], hub: readonly HubMessage[]): CheckResult {
  const expected = new Map<string, SentMessage>();
  for (const s of sent) if (!s.invalid) expected.set(keyOf(s.device, s.payload), s);
  const seen = new Map<string, number>();
  let invalidAtHub = 0;
  let invalidWithoutReason = 0;
  for (const m of hub) {
    if (m.kind === 'invalid') {
      invalidAtHub++;
      if (!m.reason) invalidWithoutReason++;
      continue;
    }
    const k = keyOf(m.device, m.payload);
    seen.set(k, (seen.get(k) ?? 0) + 1);
  }
  const problems: string[] = [];
  const lost = [...expected.keys()].filter((k) => !seen.has(k));
  const duplicated = [...seen.entries()].filter(([, n]) => n > 1).map(([k]) => k);
  const unexpected = [...seen.keys()].filter((k) => !expected.has(k));
  const invalidSent = sent.filter((s) => s.invalid).length;
  const invalidExpected = invalidKept(sent);
  if (lost.length) problems.push(`${lost.length} valid readings lost, e.g. ${few(lost).join(', ')}`);
  if (duplicated.length) problems.push(`${duplicated.length} duplicated, e.g. ${few(duplicated).join(', ')}`);
  if (unexpected.length) problems.push(`${unexpected.length} not sent, e.g. ${few(unexpected).join(', ')}`);
  if (invalidAtHub !== invalidExpected)
    problems.push(
      `invalid kept ${invalidAtHub}, expected ${invalidExpected} (${invalidSent} sent, identical ones once)`,
    );
  if (invalidWithoutReason) problems.push(`${invalidWithoutReason} invalid messages without a reason`);
  return {
    name: 'hub (BSU)',
    ok: problems.length === 0,
    figures: { validSent: expected.size, validAtHub: seen.size, invalidSent, invalidExpected, invalidAtHub },
    problems,
  };
}

/** Every message of BSU is archived exactly once, with its payload. */
export async function checkArchive(stack: Stack, hub: readonly HubMessage[]): Promise<CheckResult> {
  const settings = stack.cloudSettings();
  const s3 = createS3Client({ ...settings, s3ForcePathStyle: true });
  // A batch written but not acked (the archive killed in between) is written again on redelivery,
  // maybe in other objects: readers keep the first record of a sequence, so a record written twice
  // must be the same record.
  const first = new Map<number, string>();
  let rewritten = 0;
  const differing: string[] = [];
  try {
    for (const key of await listManifests(s3, settings.s3Bucket, '')) {
      const { records } = await readArchiveObject(s3, settings.s3Bucket, key);
      for (const r of records) {
        const text = JSON.stringify(r);
        const seen = first.get(r.seq);
        if (seen === undefined) first.set(r.seq, text);
        else if (seen === text) rewritten++;
        else differing.push(String(r.seq));
      }
    }
  } finally {
    s3.destroy();
  }
  const problems: string[] = [];
  const hubSeqs = new Set(hub.map((m) => m.seq));
  const missing = hub.filter((m) => !first.has(m.seq)).map((m) => String(m.seq));
  const extra = [...first.keys()].filter((s) => !hubSeqs.has(s)).map(String);
  if (missing.length)
    problems.push(`${missing.length} hub messages not archived, e.g. seq ${few(missing).join(', ')}`);
  if (differing.length)
    problems.push(`${differing.length} archived twice, differently, e.g. seq ${few(differing).join(', ')}`);
  if (extra.length)
    problems.push(`${extra.length} archived but not in BSU, e.g. seq ${few(extra).join(', ')}`);
  return {
    name: 'archive (S3)',
    ok: problems.length === 0,
    figures: { hubMessages: hub.length, archived: first.size, rewritten },
    problems,
  };
}

interface LastReading {
  tsMs: number;
  soc: number;
}

/** Per device, the valid telemetry sent, in the order of its `seq`. */
function telemetryByDevice(sent: readonly SentMessage[]): Map<string, { site: string; readings: unknown[] }> {
  const out = new Map<string, { site: string; readings: unknown[] }>();
  for (const s of sent) {
    if (s.invalid || s.kind !== 'telemetry') continue;
    const entry = out.get(s.device) ?? { site: s.site, readings: [] };
    entry.readings.push(JSON.parse(Buffer.from(s.payload).toString('utf8')));
    out.set(s.device, entry);
  }
  return out;
}

const tsMsOf = (ts: unknown): number => (typeof ts === 'number' ? ts : Date.parse(String(ts)));

/** The monitor's unit state holds each device's last telemetry reading. */
export async function checkRedis(stack: Stack, sent: readonly SentMessage[]): Promise<CheckResult> {
  const keys = monitorKeys();
  const settings = stack.cloudSettings();
  const client = createClient(
    redisClientOptions({
      redisUrl: settings.redisUrl,
      redisUsername: settings.redisUsername,
      redisPassword: readFileSync(settings.redisPasswordFile, 'utf8').trim(),
    }),
  );
  client.on('error', () => undefined);
  await client.connect();
  const problems: string[] = [];
  let devices = 0;
  try {
    for (const [device, { site, readings }] of telemetryByDevice(sent)) {
      devices++;
      const last = readings.reduce<LastReading>(
        (best, r) => {
          const { ts, SoC } = r as { ts: unknown; SoC: number };
          const tsMs = tsMsOf(ts);
          return tsMs >= best.tsMs ? { tsMs, soc: SoC } : best;
        },
        { tsMs: -1, soc: NaN },
      );
      const unit = await client.hGetAll(keys.unit(site, device));
      // telemetrySeq is the hub's stream sequence; the device's reading is known by its time.
      if (Number(unit.telemetryTsMs) !== last.tsMs || Number(unit.SoC) !== last.soc)
        problems.push(
          `${site}/${device}: monitor has SoC ${unit.SoC ?? '-'} at ${unit.telemetryTsMs ?? '-'}, last sent ${last.soc} at ${last.tsMs}`,
        );
    }
  } finally {
    await client.quit().catch(() => undefined);
  }
  return {
    name: 'monitor (Redis)',
    ok: problems.length === 0,
    figures: { devices },
    problems: few(problems),
  };
}

/** Each engine holds one telemetry point per valid reading, with the SoC sent. */
export async function checkEngine(
  stack: Stack,
  engine: 'influx1' | 'influx2',
  sent: readonly SentMessage[],
  window: { sinceMs: number; untilMs: number },
): Promise<CheckResult> {
  const settings = stack.cloudSettings();
  const reader = createEngineReader(
    engine,
    { ...settings, influxGzip: false },
    {
      requestTimeoutMs: 60_000,
    },
  );
  const got = new Map<string, { count: number; sum: number }>();
  try {
    const rows = await reader.hourlyStats({ ...window, measurement: 'telemetry', fields: ['SoC'] });
    for (const r of rows) {
      const g = got.get(r.device) ?? { count: 0, sum: 0 };
      g.count += r.count;
      g.sum += r.fields.SoC?.sum ?? 0;
      got.set(r.device, g);
    }
  } finally {
    await reader.close();
  }
  const problems: string[] = [];
  let points = 0;
  for (const [device, { readings }] of telemetryByDevice(sent)) {
    const count = readings.length;
    const sum = readings.reduce<number>((a, r) => a + (r as { SoC: number }).SoC, 0);
    points += count;
    const g = got.get(device) ?? { count: 0, sum: 0 };
    if (g.count !== count || Math.abs(g.sum - sum) > 1e-6 * Math.max(1, Math.abs(sum)))
      problems.push(
        `${device}: ${g.count} points (SoC sum ${g.sum.toFixed(2)}), sent ${count} (${sum.toFixed(2)})`,
      );
  }
  const name = engine === 'influx1' ? 'InfluxDB 1.x' : 'VictoriaMetrics';
  return { name, ok: problems.length === 0, figures: { telemetrySent: points }, problems: few(problems) };
}
