/**
 * The monitor's whole footprint in Redis for one site (cloud/monitor/keys.ts), read back in a
 * canonical form, and what it must be after a sequence of messages, worked out from the messages
 * and the rules of docs/consumers.md — not from the monitor's own code. Comparing the two with
 * deepEqual checks unit state, alarms, indexes, site counts and every change announced (a message
 * applied twice would show as a second announcement or a unit counted twice).
 */
import type { RedisClientType } from 'redis';
import { receivedAtMs } from '../../cloud/archive/layout.ts';
import { STATUS_FIELDS, TELEMETRY_FIELDS, type MonitorKeys } from '../../cloud/monitor/keys.ts';
import type { SinkMessage } from '../../cloud/sink.ts';
import { parseSubject } from '../../schemas/subjects.ts';
import { decodePayload, severityOf, type Evt1Alarm } from '../../schemas/index.ts';
import type { StoredMessage } from './jetstream.ts';

export type Row = Record<string, unknown>;

/** Rows sorted by their JSON (keys sorted first): a canonical form for deepEqual. */
export function canonical(rows: Row[]): Row[] {
  const sorted = rows.map((r) => Object.fromEntries(Object.entries(r).sort(([a], [b]) => (a < b ? -1 : 1))));
  return sorted.sort((a, b) => (JSON.stringify(a) < JSON.stringify(b) ? -1 : 1));
}

/** A message read from a stream, as the runner would hand it to a sink. */
export function asSinkMessage(m: StoredMessage): SinkMessage {
  const parsed = parseSubject(m.subject);
  if (!parsed) throw new Error(`not a device subject: ${m.subject}`);
  return {
    seq: m.seq,
    subject: m.subject,
    site: parsed.site,
    device: parsed.device,
    kind: parsed.kind,
    storedAtMs: 0,
    headers: m.headers,
    payload: m.payload,
    deliveryCount: 1,
  };
}

/** The monitor's whole footprint for one site, canonical. */
export async function readMonitorState(
  redis: RedisClientType,
  keys: MonitorKeys,
  site: string,
): Promise<Row[]> {
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
 * FAULT or an active alarm of severity `alarm`, else online (run the monitor with an
 * `offlineAfterMs` longer than the test, so that no unit goes offline);
 * a change is announced when State, ChaSt, firmware, an alarm or the health changes.
 */
export function expectedMonitorState(messages: readonly SinkMessage[]): Row[] {
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
