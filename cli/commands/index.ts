import type { Command } from 'commander';
import { consumers } from '../../cloud/consumers.ts';

/** Adds one subcommand to the program. */
export type RegisterCommand = (program: Command) => void;

/**
 * Every command, in the order `--help` lists them, with its one-line summary (written here only:
 * cli/main.ts gives it to the command it loads). Only the command being run is loaded: a bridge
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
  ...consumers.map((c): CommandEntry => ({
    name: c.name,
    summary: c.summary,
    load: async () => (await import('./consumer.ts')).consumerCommand(await c.load()),
  })),
  {
    name: 'replay',
    summary:
      're-run a consumer from a JetStream sequence (one-shot through its sink, or by moving its durable)',
    load: async () => (await import('./replay.ts')).registerReplay,
  },
  {
    name: 'backfill',
    summary: "load a time range of the S3 archive into a consumer's store (a new engine, a rebuilt cache)",
    load: async () => (await import('./backfill.ts')).registerBackfill,
  },
  {
    name: 'migrate',
    summary: 'swap the time-series engine in flight: plan, start, backfill, verify, cutover',
    load: async () => (await import('./migrate.ts')).registerMigrate,
  },
  {
    name: 'audit',
    summary: 'did we lose data? the stream, the archive and each engine per site and hour, every gap listed',
    load: async () => (await import('./audit.ts')).registerAudit,
  },
  {
    name: 'dlq',
    summary: 'dead letters: list them, show one, redrive them through their consumer’s sink',
    load: async () => (await import('./dlq.ts')).registerDlq,
  },
  {
    name: 'console',
    summary: 'the fleet console: a read-only web page of sites, units, consumers and dead letters',
    load: async () => (await import('./console.ts')).registerConsole,
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
