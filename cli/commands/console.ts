/**
 * `switchyard console`: the read-only fleet console (cloud/console/), with the consumers'
 * connection settings from flags, `SWITCHYARD_*` variables, `--config FILE` or the env file
 * `stack up` writes (`--env-file DIR/env/cloud.env`).
 */
import { Command } from 'commander';
import { ConsoleConfigSchema } from '../../cloud/console/config.ts';
import { runConsoleService } from '../../cloud/console/service.ts';
import { addConfigOptions, loadConfig } from '../../lib/config.ts';
import { switchyardEnv } from '../../lib/env.ts';
import { readEnvFile } from '../../lib/env-file.ts';
import type { RegisterCommand } from './index.ts';

export const registerConsole: RegisterCommand = (program) => {
  const command = new Command('console').description(
    'Serves the fleet console: every site with its units, last contact and hub lag; each site with its ' +
      "units and a chart of SoC and power; the pipeline's consumers, engine swaps and dead letters. " +
      'Read-only. Logs the URL it listens on; asks for consoleToken unless consoleBehindProxy (or --insecure).',
  );
  addConfigOptions(command, ConsoleConfigSchema)
    .option('--env-file <file>', 'KEY=value file with the SWITCHYARD_* settings (e.g. DIR/env/cloud.env)')
    .action(async (flags: Record<string, unknown>) => {
      const envFile = flags.envFile as string | undefined;
      // Settings in the environment win over the file, as for the operator commands.
      const env = { ...(envFile ? readEnvFile(envFile) : {}), ...switchyardEnv() };
      await runConsoleService(loadConfig(ConsoleConfigSchema, { flags, env }));
    });
  program.addCommand(command);
};
