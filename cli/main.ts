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

for (const register of commands) register(program);

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
