import { Command } from 'commander';
import { jetstreamManager } from '@nats-io/jetstream';
import type { NatsConnection } from '@nats-io/transport-node';
import Type, { type Static } from 'typebox';
import { OperatorStore, type AccountJwt } from '../../cloud/accounts/operator-store.ts';
import { pushAccountJwts } from '../../cloud/accounts/resolver.ts';
import {
  addSite,
  HubStreamConfigSchema,
  isSitePaused,
  listSites,
  removeSite,
  pausedSites,
  pauseSite,
  resumeSite,
} from '../../cloud/hub-stream.ts';
import { SiteInitConfigSchema } from '../../edge/config.ts';
import { checkStreamBudgets, ensureSiteStreams } from '../../edge/site-streams.ts';
import { addConfigOptions, loadConfig } from '../../lib/config.ts';
import { UsageError } from '../../lib/errors.ts';
import { connectNats, natsAuthOf, natsInsecurities } from '../../lib/nats.ts';
import { requireSecure } from '../../lib/secure.ts';
import { isValidId } from '../../schemas/index.ts';
import type { RegisterCommand } from './index.ts';

function checkSite(site: string): string {
  if (!isValidId(site))
    throw new UsageError(`invalid site id ${JSON.stringify(site)}: use letters, digits, - and _`);
  return site;
}

const SiteAdminConfigSchema = Type.Object({
  ...HubStreamConfigSchema.properties,
  operatorDir: Type.String({
    default: '',
    description:
      "The operator's directory (keys and JWTs): with it, `add` creates the site's accounts and credentials and gives them to the hub, `remove` revokes them",
  }),
});
type SiteAdminConfig = Static<typeof SiteAdminConfigSchema>;

function loadSiteAdminConfig(flags: Record<string, unknown>): SiteAdminConfig {
  const config = loadConfig(SiteAdminConfigSchema, { flags });
  requireSecure(natsInsecurities(config.natsUrl, natsAuthOf(config)), config.insecure);
  return config;
}

/** A one-shot connection to the hub, as `config`'s user (or with other credentials). */
async function hubConnection(config: SiteAdminConfig, creds?: string): Promise<NatsConnection> {
  return connectNats({
    url: config.natsUrl,
    name: 'switchyard-site',
    connectTimeoutMs: 5000,
    waitForServer: false,
    auth: { ...natsAuthOf(config), ...(creds ? { natsCreds: creds } : {}) },
  }).catch((err: unknown) => {
    throw new Error(`cannot reach the hub at ${config.natsUrl}`, { cause: err });
  });
}

async function withHub<T>(
  config: SiteAdminConfig,
  work: (jsm: Awaited<ReturnType<typeof jetstreamManager>>, nc: NatsConnection) => Promise<T>,
) {
  const nc = await hubConnection(config);
  try {
    return await work(await jetstreamManager(nc), nc);
  } finally {
    await nc.close();
  }
}

/** Gives the hub's resolver the account JWTs `change` returns (as the operator's system user). */
async function updateAccounts(
  config: SiteAdminConfig,
  change: (store: OperatorStore) => Promise<AccountJwt[]>,
): Promise<OperatorStore> {
  const store = await OperatorStore.open(config.operatorDir);
  const jwts = await change(store);
  const system = await hubConnection(config, store.systemCreds);
  try {
    await pushAccountJwts(system, jwts);
  } finally {
    await system.close();
  }
  return store;
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
        "With --operator-dir, creates the site's accounts and credentials and gives the hub its account " +
          "JWT (no restart, no reload); then sources the site's streams into the hub stream BSU over the leaf link.",
      ),
    SiteAdminConfigSchema,
  ).action(async (name: string, flags: Record<string, unknown>) => {
    const config = loadSiteAdminConfig(flags);
    checkSite(name);
    if (config.operatorDir) {
      const store = await updateAccounts(config, (s) => s.enrolSite(name));
      const files = store.siteFiles(name);
      process.stdout.write(
        `${name}: account given to the hub; the gateway's files are in ${files.dir} ` +
          `(leaf credentials ${files.leafCreds}, bridge credentials ${files.bridgeCreds})\n`,
      );
    }
    const info = await withHub(config, async (jsm, nc) =>
      (await isSitePaused(nc, name)) ? undefined : addSite(jsm, name, config),
    );
    if (!info) process.stdout.write(`${name}: paused; \`switchyard site resume ${name}\` sources it again\n`);
    else
      process.stdout.write(
        `${name}: sourced into BSU (${info.config.sources?.length ?? 0} sources in all)\n`,
      );
  });

  addConfigOptions(
    site
      .command('remove')
      .argument('<site>', 'site id')
      .description(
        'Stops sourcing the site; BSU keeps what it has. With --operator-dir, also revokes its credentials: ' +
          'its leaf is disconnected and cannot come back.',
      ),
    SiteAdminConfigSchema,
  ).action(async (name: string, flags: Record<string, unknown>) => {
    const config = loadSiteAdminConfig(flags);
    checkSite(name);
    const removed = await withHub(config, (jsm, nc) => removeSite(jsm, name, nc));
    if (config.operatorDir) {
      await updateAccounts(config, (s) => s.revokeSite(name));
      process.stdout.write(`${name}: credentials revoked\n`);
    } else if (!removed) throw new UsageError(`${name} is not sourced by BSU`);
    process.stdout.write(`${name}: no longer sourced\n`);
  });

  for (const [verb, paused, description] of [
    [
      'pause',
      true,
      'Stops taking the site into BSU (a site flooding the hub): its readings stay in its own streams, ' +
        'within its own budgets, and the other sites are not held up behind them.',
    ],
    [
      'resume',
      false,
      'Takes the site into BSU again, from the first reading BSU does not hold yet: nothing lost, nothing twice.',
    ],
  ] as const)
    addConfigOptions(
      site.command(verb).argument('<site>', 'site id').description(description),
      SiteAdminConfigSchema,
    ).action(async (name: string, flags: Record<string, unknown>) => {
      const config = loadSiteAdminConfig(flags);
      checkSite(name);
      const done = await withHub(config, (jsm, nc) =>
        paused ? pauseSite(nc, jsm, name) : resumeSite(nc, jsm, name),
      );
      if (!done) throw new UsageError(`${name} is not ${paused ? 'sourced by BSU' : 'paused'}`);
      process.stdout.write(`${name}: ${paused ? 'paused' : 'sourced again'}\n`);
    });

  addConfigOptions(
    site
      .command('list')
      .option('--json', 'one JSON document instead of a table')
      .description("Every site BSU sources, with its sourcing lag and the hub's last contact."),
    SiteAdminConfigSchema,
  ).action(async (flags: Record<string, unknown>) => {
    const config = loadSiteAdminConfig(flags);
    const sites = await withHub(config, async (jsm, nc) => listSites(jsm, await pausedSites(nc)));
    if (flags.json) {
      process.stdout.write(`${JSON.stringify(sites)}\n`);
      return;
    }
    const rows = sites.map((s) => [
      s.site,
      s.paused ? 'paused' : 'sourced',
      String(s.lag),
      ago(s.lastContactMs),
      s.streams.flatMap((x) => x.error ?? []).join('; '),
    ]);
    const table = [['SITE', 'STATE', 'LAG', 'LAST CONTACT', 'ERROR'], ...rows];
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
    requireSecure(natsInsecurities(config.natsUrl, natsAuthOf(config)), config.insecure);
    const nc = await connectNats({
      url: config.natsUrl,
      name: 'switchyard-site-init',
      connectTimeoutMs: 5000,
      auth: natsAuthOf(config),
    });
    try {
      const jsm = await jetstreamManager(nc);
      // The same check as the bridge's start: budgets the file store cannot hold fail here, not later.
      await checkStreamBudgets(jsm, config);
      const streams = await ensureSiteStreams(jsm, config);
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
