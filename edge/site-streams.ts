/**
 * The site's own JetStream streams: file storage in the site's domain, where readings wait on disk
 * while the uplink is down. Created or updated on every bridge start (and by `switchyard site init`).
 */
import {
  DiscardPolicy,
  JetStreamApiError,
  RetentionPolicy,
  StorageType,
  type JetStreamManager,
  type StreamConfig,
  type StreamInfo,
} from '@nats-io/jetstream';
import { siteStreamNames, siteStreamSubjects, SiteStreamRole } from '../schemas/streams.ts';
import { isStreamNotFound, NatsServerErrorCode } from '../lib/nats.ts';
import { formatBytes } from '../lib/bytes.ts';
import type { SiteStreamConfig } from './config.ts';

const nanos = (seconds: number): number => seconds * 1_000_000_000;

/** The desired configuration of a site's three streams. */
export function siteStreamConfigs(config: SiteStreamConfig): Record<SiteStreamRole, StreamConfig> {
  const names = siteStreamNames(config.site);
  const subjects = siteStreamSubjects(config.site);
  const common = {
    retention: RetentionPolicy.Limits,
    storage: StorageType.File,
    // When the budget is reached, the oldest messages of that stream go: never refuse new readings.
    discard: DiscardPolicy.Old,
    max_age: nanos(config.maxAgeS),
    duplicate_window: nanos(config.duplicateWindowS),
    num_replicas: 1,
  };
  return {
    telemetry: {
      ...common,
      name: names.telemetry,
      subjects: subjects.telemetry,
      max_bytes: config.telemetryMaxBytes,
      description: `Switchyard ${config.site}: telemetry`,
    } as StreamConfig,
    events: {
      ...common,
      name: names.events,
      subjects: subjects.events,
      max_bytes: config.eventsMaxBytes,
      description: `Switchyard ${config.site}: status and events`,
    } as StreamConfig,
    invalid: {
      ...common,
      name: names.invalid,
      subjects: subjects.invalid,
      max_bytes: config.invalidMaxBytes,
      description: `Switchyard ${config.site}: payloads kept aside as invalid`,
    } as StreamConfig,
  };
}

/**
 * Creates the site's streams, or updates their limits; returns their info. Roles are handled in
 * SiteStreamRole order, so a telemetry stream of an older release, which also captured `.invalid`,
 * gives that subject up (keeping what it stores) before the invalid stream claims it.
 */
export async function ensureSiteStreams(
  jsm: JetStreamManager,
  config: SiteStreamConfig,
): Promise<Record<SiteStreamRole, StreamInfo>> {
  const wanted = siteStreamConfigs(config);
  const out = {} as Record<SiteStreamRole, StreamInfo>;
  for (const role of Object.values(SiteStreamRole)) {
    const cfg = wanted[role];
    let info: StreamInfo;
    try {
      await jsm.streams.info(cfg.name);
      info = await jsm.streams.update(cfg.name, cfg);
    } catch (err) {
      if (!isStreamNotFound(err)) throw err;
      info = await jsm.streams.add(cfg);
    }
    out[role] = info;
  }
  return out;
}

/** JetStream's answers when a stream's max_bytes does not fit the server's or account's store. */
const NO_ROOM_CODES: ReadonlySet<number> = new Set([
  NatsServerErrorCode.insufficientResources,
  NatsServerErrorCode.accountStorageExceeded,
  NatsServerErrorCode.storageResourcesExceeded,
]);

const isNoRoom = (err: unknown): boolean => err instanceof JetStreamApiError && NO_ROOM_CODES.has(err.code);

/** Thrown when the site streams' budgets cannot fit the site server's file store. */
export class StreamBudgetError extends Error {
  override name = 'StreamBudgetError';
}

/**
 * Checks, before any stream is created or updated, that the three budgets fit the site server's
 * JetStream file store. Neither account info nor $JS.API.INFO tell the server's max_file_store,
 * so the room left is measured: a probe stream (no messages, deleted at once) is created with the
 * budget the site streams still need, and on refusal the largest size that fits is searched for
 * to name the figure.
 */
export async function checkStreamBudgets(jsm: JetStreamManager, config: SiteStreamConfig): Promise<void> {
  const wanted = Object.values(siteStreamConfigs(config));
  const total = wanted.reduce((sum, c) => sum + (c.max_bytes ?? 0), 0);
  const ours = new Set(wanted.map((c) => c.name));
  // A probe left by a start that died between creating and deleting it would skew the figures.
  await jsm.streams.delete(probeName(config.site)).catch((err: unknown) => {
    if (!isStreamNotFound(err)) throw err;
  });
  let reservedByOurs = 0;
  let reservedByAll = 0;
  for await (const info of jsm.streams.list()) {
    if (info.config.storage !== StorageType.File || info.config.max_bytes <= 0) continue;
    reservedByAll += info.config.max_bytes;
    if (ours.has(info.config.name)) reservedByOurs += info.config.max_bytes;
  }
  const needed = total - reservedByOurs;
  if (needed <= 0 || (await fits(jsm, config.site, needed))) return;
  // Binary search on MiB: about 14 probes for a store of 10 GiB, each refused at once.
  const MiB = 1024 * 1024;
  let lo = 0;
  let hi = Math.ceil(needed / MiB);
  while (hi - lo > 1) {
    const mid = Math.floor((lo + hi) / 2);
    if (await fits(jsm, config.site, mid * MiB)) lo = mid;
    else hi = mid;
  }
  const store = reservedByAll + lo * MiB;
  throw new StreamBudgetError(
    `stream budgets ${formatBytes(total)} exceed the site server's max_file_store ${formatBytes(store)}` +
      (reservedByAll > reservedByOurs
        ? ` (of which other streams reserve ${formatBytes(reservedByAll - reservedByOurs)})`
        : '') +
      ': lower SWITCHYARD_TELEMETRY_MAX_BYTES, SWITCHYARD_EVENTS_MAX_BYTES or SWITCHYARD_INVALID_MAX_BYTES, or raise max_file_store',
  );
}

const probeName = (site: string): string => `SITE_${site}_BUDGET_PROBE`;

/** Whether a file stream of `maxBytes` can be created now (the probe is deleted again). */
async function fits(jsm: JetStreamManager, site: string, maxBytes: number): Promise<boolean> {
  if (maxBytes <= 0) return true;
  const name = probeName(site);
  try {
    await jsm.streams.add({
      name,
      subjects: [`_switchyard.budget-probe.${site}`],
      storage: StorageType.File,
      max_bytes: maxBytes,
      num_replicas: 1,
    });
  } catch (err) {
    if (isNoRoom(err)) return false;
    throw err;
  }
  await jsm.streams.delete(name);
  return true;
}
