import type { Command } from 'commander';

/** Adds one subcommand to the program. */
export type RegisterCommand = (program: Command) => void;

/**
 * Every command, in the order `--help` lists them. Only the command being run is loaded: a bridge
 * on a gateway does not pay for the S3 client, and `--help` answers without loading any of them.
 */
export interface CommandEntry {
  name: string;
  summary: string;
  load: () => Promise<RegisterCommand>;
}

export const commands: CommandEntry[] = [
  {
    name: 'edge',
    summary: 'bridge a site: MQTT broker → the site JetStream (runs on the gateway)',
    load: async () => (await import('./edge.ts')).registerEdge,
  },
  {
    name: 'archive',
    summary: 'archive every message of the hub stream to S3 (long-term replay and backfill)',
    load: async () => (await import('./archive.ts')).registerArchive,
  },
  {
    name: 'monitor',
    summary: 'keep the latest state of every unit in Redis (dashboards, alerting)',
    load: async () => (await import('./monitor.ts')).registerMonitor,
  },
  {
    name: 'ingest',
    summary: 'write device readings from the hub stream to InfluxDB (v2 API or 1.x) or VictoriaMetrics',
    load: async () => (await import('./ingest.ts')).registerIngest,
  },
  {
    name: 'site',
    summary: 'onboard sites: their streams at the edge, their sourcing at the hub',
    load: async () => (await import('./site.ts')).registerSite,
  },
  {
    name: 'stack',
    summary: 'a local stack of real servers (hub, sites, Redis, VictoriaMetrics, InfluxDB, S3)',
    load: async () => (await import('./stack.ts')).registerStack,
  },
  {
    name: 'simulate',
    summary: 'simulated BSUs publishing telemetry, status and events to an MQTT broker',
    load: async () => (await import('./simulate.ts')).registerSimulate,
  },
  {
    name: 'dev',
    summary: 'everything at once on this machine: stack, bridges, devices, consumers, live view',
    load: async () => (await import('./dev.ts')).registerDev,
  },
];
