/**
 * A consumer as a command (`switchyard archive`, `monitor`, `ingest`): its spec's settings as
 * flags, environment and `--config FILE`, run as a service until SIGTERM.
 */
import { Command } from 'commander';
import type { TObject } from 'typebox';
import { addConfigOptions } from '../../lib/config.ts';
import {
  consumerSchema,
  loadConsumerConfig,
  runConsumerService,
  type ConsumerSpec,
} from '../../cloud/consumer.ts';
import type { RegisterCommand } from './index.ts';

export function consumerCommand(spec: ConsumerSpec<TObject>): RegisterCommand {
  return (program) => {
    const command = new Command(spec.name).description(spec.description);
    addConfigOptions(command, consumerSchema(spec)).action(async (flags: Record<string, unknown>) => {
      // Settings the schema cannot check alone (maxAckPending ≥ batchSize …) are checked by the
      // runner before it connects, as a UsageError: exit 2 either way.
      await runConsumerService(spec, loadConsumerConfig(spec, { flags }));
    });
    program.addCommand(command);
  };
}
