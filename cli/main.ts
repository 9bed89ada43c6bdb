/**
 * `switchyard`: one command per process or task. Each command lives in its own module under
 * cli/commands and registers itself here; a command that is not built yet is simply not listed.
 */
import { Command, CommanderError } from 'commander';
import { describeError, ExitCode, UsageError } from '../lib/errors.ts';
import { commands } from './commands/index.ts';

const program = new Command('switchyard')
  .description('Battery-storage telemetry from site MQTT brokers through NATS JetStream to the cloud.')
  .showHelpAfterError('(add --help for usage)')
  .exitOverride();

// Load just the command being run; for help (or a typo) list every command by its summary.
const args = process.argv.slice(2);
const wanted = args[0] === 'help' ? args[1] : args[0];
const entry = commands.find((c) => c.name === wanted);
if (entry) {
  (await entry.load())(program);
  program.commands.find((c) => c.name() === entry.name)?.summary(entry.summary);
} else {
  for (const c of commands) program.command(c.name).summary(c.summary);
}
// Subcommands do not inherit exitOverride: bad usage anywhere must exit 2, not commander's 1.
for (const command of program.commands) command.exitOverride();

try {
  await program.parseAsync(process.argv);
} catch (err) {
  if (err instanceof CommanderError) {
    // commander already printed help or its own one-line error.
    process.exitCode = err.exitCode === 0 ? ExitCode.ok : ExitCode.usage;
  } else if (err instanceof UsageError) {
    process.stderr.write(`switchyard: ${err.message}\n`);
    process.exitCode = ExitCode.usage;
  } else {
    process.stderr.write(`switchyard: ${describeError(err)}\n`);
    process.exitCode = ExitCode.failure;
  }
}
