/**
 * The site's own JetStream streams: file storage in the site's domain, where readings wait on disk
 * while the uplink is down. Created or updated on every bridge start (and by `switchyard site init`).
 */
import {
  DiscardPolicy,
  RetentionPolicy,
  StorageType,
  type JetStreamManager,
  type StreamConfig,
  type StreamInfo,
} from '@nats-io/jetstream';
import { siteStreamNames, siteStreamSubjects, SiteStreamRole } from '../schemas/streams.ts';
import { isStreamNotFound } from '../lib/nats.ts';
import type { SiteStreamConfig } from './config.ts';

const nanos = (seconds: number): number => seconds * 1_000_000_000;

/** The desired configuration of a site's two streams. */
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
      description: `Switchyard ${config.site}: telemetry and invalid payloads`,
    } as StreamConfig,
    events: {
      ...common,
      name: names.events,
      subjects: subjects.events,
      max_bytes: config.eventsMaxBytes,
      description: `Switchyard ${config.site}: status and events`,
    } as StreamConfig,
  };
}

/** Creates the site's streams, or updates their limits; returns their info. */
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
