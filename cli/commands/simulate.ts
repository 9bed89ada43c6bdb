/**
 * `switchyard simulate`: a fleet of simulated BSUs publishing to a site MQTT broker. Prints a
 * summary when done or stopped (SIGINT/SIGTERM); exit 0 done, 1 runtime failure, 2 bad usage.
 */
import { Command } from 'commander';
import { addConfigOptions, loadConfig } from '../../lib/config.ts';
import { ConfigError } from '../../lib/errors.ts';
import { silentLogger } from '../../lib/log.ts';
import { shutdownSignal } from '../../lib/shutdown.ts';
import { crossCheck, SimulateConfigSchema } from '../../simulate/config.ts';
import { runSimulator, type SimulatorReport } from '../../simulate/simulator.ts';
import type { RegisterCommand } from './index.ts';

/** One human line: what was sent, by kind, and the invalid ones by reason. */
export function formatReport(r: SimulatorReport): string {
  const kinds = Object.entries(r.byKind)
    .map(([k, n]) => `${k} ${n}`)
    .join(', ');
  const reasons = Object.entries(r.invalid.byReason)
    .filter(([, n]) => n > 0)
    .map(([k, n]) => `${k} ${n}`)
    .join(', ');
  const invalid =
    r.invalid.total > 0 ? `; invalid on purpose ${r.invalid.total} (${reasons})` : '; invalid on purpose 0';
  const stopped = r.stoppedBy === 'signal' ? ' (stopped by signal)' : '';
  return (
    `simulate: sent ${r.sent} messages from ${r.devices} devices to ${r.mqtt} in ${(r.elapsedMs / 1000).toFixed(2)} s ` +
    `(${r.ratePerS} msg/s)${stopped}: ${kinds}${invalid}`
  );
}

export const registerSimulate: RegisterCommand = (program) => {
  const command = new Command('simulate')
    // A command added with addCommand does not inherit the program's settings: without this, a bad
    // flag makes commander exit 1 by itself instead of throwing to cli/main.ts (exit 2).
    .exitOverride()
    .showHelpAfterError('(add --help for usage)')
    .description(
      'Publishes QoS 1 JSON on bsu/<device>/<kind> at a steady rate, from devices whose readings follow ' +
        'battery physics (SoC follows power, temperature follows current, cycles follow throughput). ' +
        'Deterministic for a seed. --invalid-ratio sends that share of payloads invalid on purpose. ' +
        'Prints what it sent, by kind and invalid reason, when done or stopped.',
    );
  addConfigOptions(command, SimulateConfigSchema).action(async (flags: Record<string, unknown>) => {
    const config = loadConfig(SimulateConfigSchema, { flags });
    const problems = crossCheck(config);
    if (problems.length > 0) throw new ConfigError(problems);
    const report = await runSimulator(config, shutdownSignal(silentLogger));
    process.stdout.write(`${config.json ? JSON.stringify(report) : formatReport(report)}\n`);
  });
  program.addCommand(command);
};
