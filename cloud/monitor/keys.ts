/**
 * The monitor's Redis keys (docs/consumers.md has the table): all under one prefix, `bsu:` by
 * default, another for a second monitor during an engine swap, and a hash tag such as `{bsu}:` on
 * Redis Cluster (cloud/monitor/apply.lua says why). Site and device ids never contain `:`
 * (schemas/subjects.ts), so `<site>:<device>` splits unambiguously.
 */

export const DEFAULT_KEY_PREFIX = 'bsu:';

/** Health of a unit, as counted per site. */
export const UnitHealth = { online: 'online', offline: 'offline', faulted: 'faulted' } as const;
export type UnitHealth = (typeof UnitHealth)[keyof typeof UnitHealth];

/** Fields of a unit hash. Field groups move forward independently, each by its own device time. */
export const UnitField = {
  site: 'site',
  device: 'device',
  // telemetry group
  SoC: 'SoC',
  SoH: 'SoH',
  W: 'W',
  V: 'V',
  A: 'A',
  telemetryTsMs: 'telemetryTsMs',
  telemetrySeq: 'telemetrySeq',
  // status group
  State: 'State',
  ChaSt: 'ChaSt',
  LocRemCtl: 'LocRemCtl',
  Hb: 'Hb',
  uptimeS: 'uptimeS',
  firmware: 'firmware',
  statusTsMs: 'statusTsMs',
  statusSeq: 'statusSeq',
  // alarms: JSON list of active alarm names (sorted), their count, how many are alarm-severity
  alarms: 'alarms',
  activeAlarms: 'activeAlarms',
  severeAlarms: 'severeAlarms',
  eventTsMs: 'eventTsMs',
  // any message
  lastSeenMs: 'lastSeenMs',
  lastSeq: 'lastSeq',
  health: 'health',
} as const;

/** Telemetry fields the monitor keeps (the rest is ingest's). */
export const TELEMETRY_FIELDS = ['SoC', 'SoH', 'W', 'V', 'A'] as const;
/** Status fields the monitor keeps. */
export const STATUS_FIELDS = ['State', 'ChaSt', 'LocRemCtl', 'Hb', 'uptimeS', 'firmware'] as const;

export interface MonitorKeys {
  unit(site: string, device: string): string;
  alarms(site: string, device: string): string;
  site(site: string): string;
  sites: string;
  lastSeen: string;
  siteLastSeen(site: string): string;
  online: string;
  changes: string;
}

export function monitorKeys(prefix: string = DEFAULT_KEY_PREFIX): MonitorKeys {
  return {
    unit: (site, device) => `${prefix}unit:${site}:${device}`,
    alarms: (site, device) => `${prefix}unit:${site}:${device}:alarms`,
    site: (site) => `${prefix}site:${site}`,
    sites: `${prefix}sites`,
    lastSeen: `${prefix}lastseen`,
    siteLastSeen: (site) => `${prefix}lastseen:${site}`,
    online: `${prefix}online`,
    changes: `${prefix}changes`,
  };
}

/**
 * One entry of the changes stream. `change` is `health`, `State`, `ChaSt`, `firmware` or
 * `alarm:<NAME>`; `from` is empty for a first value.
 */
export interface UnitChange {
  unit: string;
  site: string;
  device: string;
  change: string;
  from: string;
  to: string;
  /** Device time of the message that made the change (receive time for health). */
  tsMs: string;
  /** Stream sequence of that message (empty for a change the offline sweep made). */
  seq: string;
}
