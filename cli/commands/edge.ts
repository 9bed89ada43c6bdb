import { Command } from 'commander';
import { addConfigOptions, loadConfig } from '../../lib/config.ts';
import { runService } from '../../lib/service.ts';
import { EdgeBridge } from '../../edge/bridge.ts';
import { edgeInsecurities, EdgeConfigSchema } from '../../edge/config.ts';
import { requireSecure } from '../../lib/secure.ts';
import type { RegisterCommand } from './index.ts';

export const registerEdge: RegisterCommand = (program) => {
  const command = new Command('edge').description(
    'Subscribes to the site broker (QoS 1, persistent session), validates each payload and stores it in the ' +
      "site's JetStream streams; the PUBACK follows JetStream's PubAck. Invalid payloads are kept as kind invalid.",
  );
  addConfigOptions(command, EdgeConfigSchema).action(async (flags: Record<string, unknown>) => {
    const config = loadConfig(EdgeConfigSchema, { flags });
    await runService({
      name: 'switchyard-edge',
      opsHost: config.opsHost,
      opsPort: config.opsPort,
      logLevel: config.logLevel,
      start: async ({ log, registry }) => {
        requireSecure(edgeInsecurities(config), config.insecure, log);
        const bridge = new EdgeBridge({ config, log: log.child({ site: config.site }), registry });
        await bridge.start();
        return bridge;
      },
    });
  });
  program.addCommand(command);
};
