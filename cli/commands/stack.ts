/**
 * `switchyard stack up | down | status | kill | restart | cut-link | heal-link | add-device |
 * remove-device`: the local stack of real servers (stack/up.ts, stack/verbs.ts, stack/link.ts) from
 * the command line. Every verb takes `--dir` (default `.switchyard/stack`); `up` takes `--sites N`.
 */
import { relative } from 'node:path';
import type { Command } from 'commander';
import Type, { type TObject } from 'typebox';
import { addConfigOptions, loadConfig } from '../../lib/config.ts';
import { UsageError } from '../../lib/errors.ts';
import { MissingBinaryError } from '../../stack/server-specs.ts';
import { DEFAULT_STACK_DIR, type Stack } from '../../stack/stack-file.ts';
import { MAX_SITES, stackUp } from '../../stack/up.ts';
import {
  addDevices,
  killServerByName,
  removeDevice,
  restartServerByName,
  stackDown,
  stackStatus,
  type ServerStatus,
} from '../../stack/verbs.ts';
import { cutLink, healLink } from '../../stack/link.ts';
import type { RegisterCommand } from './index.ts';

const dir = Type.String({
  minLength: 1,
  default: DEFAULT_STACK_DIR,
  description: "the stack's directory: stack.json, env files, every server's config, data and log",
});

/** Settings of every verb but `up`. */
export const StackDirConfig = Type.Object({ dir });

/** Settings of `stack up`. */
export const StackUpConfig = Type.Object({
  dir,
  sites: Type.Integer({
    minimum: 1,
    maximum: MAX_SITES,
    default: 1,
    description: 'number of sites (site-1 … site-N), each a nats-server, a mosquitto and a link',
  }),
});

/** Loads `schema` from the command's flags (and env/file) as lib/config.ts does for every command. */
const configOf = <T extends TObject>(schema: T, command: Command) =>
  loadConfig(schema, { flags: command.opts() });

/** A missing server is a setup problem the user fixes with one command: usage (exit 2), one line. */
async function asUsage<T>(run: () => Promise<T>): Promise<T> {
  try {
    return await run();
  } catch (err) {
    if (err instanceof MissingBinaryError) throw new UsageError(err.message);
    throw err;
  }
}

const seconds = (ms: number): string => `${(ms / 1000).toFixed(1)} s`;

function table(header: string[], rows: string[][]): string {
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((r) => (r[i] ?? '').length)));
  const line = (cells: string[]): string =>
    cells
      .map((c, i) => (i === cells.length - 1 ? c : c.padEnd(widths[i]!)))
      .join('  ')
      .trimEnd();
  return `${[header, ...rows].map(line).join('\n')}\n`;
}

const stateText = (s: ServerStatus): string => (s.leaf === 'down' ? `${s.state} (leaf down)` : s.state);

function serversTable(stack: Stack): string {
  return table(
    ['NAME', 'ROLE', 'SITE', 'PID', 'URL'],
    stack.servers.map((s) => [s.name, s.role, s.site ?? '', String(s.pid), s.url]),
  );
}

/** A path as short as it can be read back from the working directory. */
const shortPath = (path: string): string => {
  const rel = relative(process.cwd(), path);
  return rel && !rel.startsWith('..') ? rel : path;
};

/** `switchyard stack`. */
export const registerStack: RegisterCommand = (program) => {
  const stack = program
    .command('stack')
    .description('run the real servers of Switchyard on this machine: a hub, sites, Redis, S3, InfluxDB')
    .addHelpText(
      'after',
      '\nServers run detached on free 127.0.0.1 ports; DIR/stack.json records them and DIR/env/*.env ' +
        'holds the settings for the other commands (set -a; . DIR/env/site-1.env).',
    );

  addConfigOptions(
    stack
      .command('up')
      .description(
        'start a hub, N sites (nats-server, mosquitto, link), Redis, VictoriaMetrics, InfluxDB 1.x, s3rver',
      ),
    StackUpConfig,
  ).action(async (_opts, command: Command) => {
    const config = configOf(StackUpConfig, command);
    const controller = new AbortController();
    const abort = (): void => controller.abort();
    process.once('SIGINT', abort);
    process.once('SIGTERM', abort);
    const startedMs = Date.now();
    try {
      const up = await asUsage(() =>
        stackUp({
          dir: config.dir,
          sites: config.sites,
          signal: controller.signal,
          onReady: (server, elapsedMs) =>
            process.stderr.write(`  ${server.name} ready (${seconds(elapsedMs)})\n`),
        }),
      );
      process.stdout.write(
        `stack up in ${shortPath(up.dir)}: ${up.servers.length} servers, ${up.sites.length} site(s), ${seconds(Date.now() - startedMs)}\n\n`,
      );
      process.stdout.write(serversTable(up));
      process.stdout.write(
        `\nenv files: ${[...up.sites.map((s) => up.envFile(s)), up.envFile()].map(shortPath).join(' ')}\n`,
      );
    } finally {
      process.off('SIGINT', abort);
      process.off('SIGTERM', abort);
    }
  });

  addConfigOptions(
    stack
      .command('down')
      .description('stop the servers the stack recorded (SIGTERM, then SIGKILL); keep their data'),
    StackDirConfig,
  )
    .option('--purge', "also delete the directory with every server's data")
    .action(async (opts: { purge?: boolean }, command: Command) => {
      const config = configOf(StackDirConfig, command);
      const result = await stackDown(config.dir, { purge: opts.purge === true });
      const what =
        result.stopped.length > 0 ? `stopped ${result.stopped.length} servers` : 'nothing was running';
      process.stdout.write(`stack down in ${config.dir}: ${what}${result.purged ? ', data deleted' : ''}\n`);
    });

  addConfigOptions(
    stack.command('status').description('probe every server; exit 0 when all are up, 1 otherwise'),
    StackDirConfig,
  )
    .option('--json', 'print the status as JSON')
    .action(async (opts: { json?: boolean }, command: Command) => {
      const config = configOf(StackDirConfig, command);
      const status = await stackStatus(config.dir);
      if (opts.json) process.stdout.write(`${JSON.stringify(status, null, 2)}\n`);
      else
        process.stdout.write(
          table(
            ['NAME', 'ROLE', 'SITE', 'PID', 'STATE', 'URL'],
            status.servers.map((s) => [s.name, s.role, s.site ?? '', String(s.pid), stateText(s), s.url]),
          ),
        );
      if (!status.allUp) process.exitCode = 1;
    });

  addConfigOptions(
    stack
      .command('kill')
      .argument(
        '<name>',
        'server name, as `status` lists it (hub, site-1, mqtt-site-1, link-site-1, redis, …)',
      )
      .description('SIGKILL one server (a crash); it stays in the stack, down, until `restart`'),
    StackDirConfig,
  ).action(async (name: string, _opts, command: Command) => {
    const config = configOf(StackDirConfig, command);
    const server = await killServerByName(config.dir, name);
    process.stdout.write(`killed ${server.name} (pid ${server.pid})\n`);
  });

  addConfigOptions(
    stack
      .command('restart')
      .argument('<name>', 'server name, as `status` lists it')
      .description('start one server again on the same port and data (stopping it first if it runs)'),
    StackDirConfig,
  ).action(async (name: string, _opts, command: Command) => {
    const config = configOf(StackDirConfig, command);
    const startedMs = Date.now();
    const server = await asUsage(() => restartServerByName(config.dir, name));
    process.stdout.write(
      `restarted ${server.name} (pid ${server.pid}) in ${seconds(Date.now() - startedMs)}\n`,
    );
  });

  addConfigOptions(
    stack
      .command('cut-link')
      .argument('<site>', 'site id (site-1 …)')
      .description("cut a site's uplink to the hub; returns once the hub has dropped the site's leaf"),
    StackDirConfig,
  ).action(async (site: string, _opts, command: Command) => {
    const config = configOf(StackDirConfig, command);
    const result = await cutLink(config.dir, site);
    process.stdout.write(`cut the link of ${site}: the hub dropped its leaf in ${result.elapsedMs} ms\n`);
  });

  addConfigOptions(
    stack
      .command('heal-link')
      .argument('<site>', 'site id (site-1 …)')
      .description("heal a site's uplink; returns once the site's leaf is back at the hub"),
    StackDirConfig,
  ).action(async (site: string, _opts, command: Command) => {
    const config = configOf(StackDirConfig, command);
    const result = await healLink(config.dir, site);
    process.stdout.write(
      `healed the link of ${site}: its leaf is back at the hub in ${result.elapsedMs} ms\n`,
    );
  });

  addConfigOptions(
    stack
      .command('add-device')
      .argument('<site>', 'site id (site-1 …)')
      .argument('<device>', 'device id: its MQTT user name, and the only id it may publish under')
      .description(
        "enrol a device at the site's broker, live (no restart); print its MQTT password as the last line",
      )
      .addHelpText(
        'after',
        '\nIdempotent: a device enrolled already keeps its password, printed again; --rotate gives it a ' +
          "new one (the old one is refused at once and the device's connections are closed). The " +
          "passwords of a site's devices are kept in DIR/mqtt-<site>/devices.json (mode 0600), the " +
          'file `switchyard simulate --devices-file` reads.',
      ),
    StackDirConfig,
  )
    .option('--rotate', 'issue a new password to a device enrolled already')
    .action(async (site: string, device: string, opts: { rotate?: boolean }, command: Command) => {
      const config = configOf(StackDirConfig, command);
      const result = await addDevices(config.dir, site, [device], { rotate: opts.rotate === true });
      const enrolment = result.devices[0]!;
      const how =
        enrolment.change === 'kept'
          ? 'already enrolled, password kept'
          : `${enrolment.change === 'added' ? 'enrolled' : 'new password'}; ${
              result.live
                ? 'the broker took it live'
                : `the broker is not running: it takes it when started (stack restart mqtt-${site})`
            }`;
      process.stdout.write(
        `${device} at ${site}: ${how}. MQTT user ${device}, password:\n${enrolment.password}\n`,
      );
    });

  addConfigOptions(
    stack
      .command('remove-device')
      .argument('<site>', 'site id (site-1 …)')
      .argument('<device>', 'device id')
      .description("remove a device's user from the site's broker, live: its connections are closed"),
    StackDirConfig,
  ).action(async (site: string, device: string, _opts, command: Command) => {
    const config = configOf(StackDirConfig, command);
    const result = await removeDevice(config.dir, site, device);
    process.stdout.write(
      result.removed
        ? `${device} at ${site}: removed${result.live ? '; the broker refuses it now' : ''}\n`
        : `${device} at ${site}: not enrolled, nothing to remove\n`,
    );
  });
};
