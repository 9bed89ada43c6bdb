import { Command } from 'commander';
import { jetstreamManager } from '@nats-io/jetstream';
import {
  addSite,
  HubStreamConfigSchema,
  listSites,
  removeSite,
  type HubStreamConfig,
} from '../../cloud/hub-stream.ts';
import { SiteInitConfigSchema } from '../../edge/config.ts';
import { ensureSiteStreams } from '../../edge/site-streams.ts';
import { addConfigOptions, loadConfig } from '../../lib/config.ts';
import { UsageError } from '../../lib/errors.ts';
import { connectNats } from '../../lib/nats.ts';
import { isValidId } from '../../schemas/index.ts';
import type { RegisterCommand } from './index.ts';

function checkSite(site: string): string {
  if (!isValidId(site))
    throw new UsageError(`invalid site id ${JSON.stringify(site)}: use letters, digits, - and _`);
  return site;
}

async function withHub<T>(
  config: HubStreamConfig,
  work: (jsm: Awaited<ReturnType<typeof jetstreamManager>>) => Promise<T>,
) {
  const nc = await connectNats({
    url: config.natsUrl,
    name: 'switchyard-site',
    connectTimeoutMs: 5000,
    waitForServer: false,
  }).catch((err: unknown) => {
    throw new Error(`cannot reach the hub at ${config.natsUrl}`, { cause: err });
  });
  try {
    return await work(await jetstreamManager(nc));
  } finally {
    await nc.close();
  }
}

const ago = (ms: number | undefined): string =>
  ms === undefined ? 'never' : `${(ms / 1000).toFixed(1)} s ago`;

export const registerSite: RegisterCommand = (program) => {
  const site = new Command('site').summary(
    'onboard sites: their streams at the edge, their sourcing at the hub',
  );

  addConfigOptions(
    site
      .command('add')
      .argument('<site>', 'site id (its JetStream domain)')
      .description(
        "Sources the site's streams into the hub stream BSU over the leaf link; the hub keeps running.",
      ),
    HubStreamConfigSchema,
  ).action(async (name: string, flags: Record<string, unknown>) => {
    const config = loadConfig(HubStreamConfigSchema, { flags });
    checkSite(name);
    const info = await withHub(config, (jsm) => addSite(jsm, name, config));
    process.stdout.write(`${name}: sourced into BSU (${info.config.sources?.length ?? 0} sources in all)\n`);
  });

  addConfigOptions(
    site
      .command('remove')
      .argument('<site>', 'site id')
      .description('Stops sourcing the site; BSU keeps what it has.'),
    HubStreamConfigSchema,
  ).action(async (name: string, flags: Record<string, unknown>) => {
    const config = loadConfig(HubStreamConfigSchema, { flags });
    checkSite(name);
    const removed = await withHub(config, (jsm) => removeSite(jsm, name));
    if (!removed) throw new UsageError(`${name} is not sourced by BSU`);
    process.stdout.write(`${name}: no longer sourced\n`);
  });

  addConfigOptions(
    site
      .command('list')
      .option('--json', 'one JSON document instead of a table')
      .description("Every site BSU sources, with its sourcing lag and the hub's last contact."),
    HubStreamConfigSchema,
  ).action(async (flags: Record<string, unknown>) => {
    const config = loadConfig(HubStreamConfigSchema, { flags });
    const sites = await withHub(config, listSites);
    if (flags.json) {
      process.stdout.write(`${JSON.stringify(sites)}\n`);
      return;
    }
    const rows = sites.map((s) => [
      s.site,
      String(s.lag),
      ago(s.lastContactMs),
      s.streams.flatMap((x) => x.error ?? []).join('; '),
    ]);
    const table = [['SITE', 'LAG', 'LAST CONTACT', 'ERROR'], ...rows];
    const widths = table[0]!.map((_, i) => Math.max(...table.map((r) => r[i]!.length)));
    for (const row of table)
      process.stdout.write(
        `${row
          .map((c, i) => c.padEnd(widths[i]!))
          .join('  ')
          .trimEnd()}\n`,
      );
  });

  addConfigOptions(
    site
      .command('init')
      .description(
        "Creates or updates the site's streams on the site's nats-server (the bridge also does this on start).",
      ),
    SiteInitConfigSchema,
  ).action(async (flags: Record<string, unknown>) => {
    const config = loadConfig(SiteInitConfigSchema, { flags });
    const nc = await connectNats({
      url: config.natsUrl,
      name: 'switchyard-site-init',
      connectTimeoutMs: 5000,
    });
    try {
      const streams = await ensureSiteStreams(await jetstreamManager(nc), config);
      for (const s of Object.values(streams)) {
        process.stdout.write(
          `${s.config.name}: ${s.state.messages} messages, budget ${s.config.max_bytes} bytes\n`,
        );
      }
    } finally {
      await nc.close();
    }
  });

  program.addCommand(site);
};
