/**
 * `switchyard dev`: the local stack, a bridge and simulated devices per site, and the three
 * consumers, supervised, with a live view (dev/dev.ts). Ctrl-C stops everything it started;
 * exit 0 stopped cleanly, 1 start-up failed, 2 bad usage or DIR in use.
 */
import { relative } from 'node:path';
import { Command } from 'commander';
import { addConfigOptions, loadConfig } from '../../lib/config.ts';
import { UsageError } from '../../lib/errors.ts';
import { MissingBinaryError } from '../../stack/server-specs.ts';
import { DevConfigSchema } from '../../dev/config.ts';
import { DevSession } from '../../dev/dev.ts';
import { TerminalOutput } from '../../dev/view.ts';
import type { RegisterCommand } from './index.ts';

const shortPath = (path: string): string => {
  const rel = relative(process.cwd(), path);
  return rel && !rel.startsWith('..') ? rel : path;
};

export const registerDev: RegisterCommand = (program) => {
  const command = new Command('dev')
    // A command added with addCommand does not inherit the program's settings: without this, a bad
    // flag makes commander exit 1 by itself instead of throwing to cli/main.ts (exit 2).
    .exitOverride()
    .showHelpAfterError('(add --help for usage)')
    .summary('everything at once on this machine: stack, bridges, devices, consumers, live view')
    .description(
      'Starts the local stack with N sites in DIR, sources every site into the hub stream BSU, runs a bridge ' +
        '(switchyard edge) and simulated devices per site and the consumers archive, monitor and ingest, and ' +
        'shows the flow end to end, redrawn every second. Children log to DIR/logs/; one that dies is ' +
        'restarted with backoff. Ctrl-C stops the devices, then the bridges and consumers, then the stack.',
    );
  addConfigOptions(command, DevConfigSchema)
    .option('--no-view', 'print a JSON status line every statusIntervalMs instead of the live view')
    .action(async (flags: Record<string, unknown>) => {
      const config = loadConfig(DevConfigSchema, { flags });
      const tty = process.stdout.isTTY === true;
      const output = new TerminalOutput(process.stdout, process.stderr, {
        view: config.view && tty,
        statusIntervalMs: config.statusIntervalMs,
        color: tty,
      });
      const session = new DevSession(config, output);
      const onSignal = (signal: NodeJS.Signals): void => {
        output.close();
        output.note(
          session.stopRequested
            ? `${signal} again: killing the bridges and consumers now`
            : `${signal}: stopping everything dev started (again to hurry)`,
        );
        session.stop();
      };
      // Whatever happens, the terminal gets its screen and cursor back.
      const restore = (): void => output.close();
      process.on('SIGINT', onSignal);
      process.on('SIGTERM', onSignal);
      process.once('exit', restore);
      try {
        const summary = await session.run();
        output.close();
        output.note(
          `stopped ${summary.processes} processes and ${summary.servers.length} servers; data kept in ` +
            `${shortPath(summary.dir)} (the next dev continues from it; ` +
            `'switchyard stack down --dir ${shortPath(summary.dir)} --purge' deletes it)`,
        );
      } catch (err) {
        output.close();
        // A server that is not installed is a setup problem fixed with one command: usage, exit 2.
        if (err instanceof MissingBinaryError) throw new UsageError(err.message);
        throw err;
      } finally {
        process.off('SIGINT', onSignal);
        process.off('SIGTERM', onSignal);
        process.off('exit', restore);
      }
    });
  program.addCommand(command);
};
