/** Consumers run in the test's own process, from their specs, as `dev` runs them. */
import { writeFileSync } from 'node:fs';
import { Registry } from 'prom-client';
import type { TObject } from 'typebox';
import { loadConsumerConfig, startConsumer, type ConsumerSpec } from '../../cloud/consumer.ts';
import { RunnerMetric } from '../../cloud/runner-metrics.ts';
import { silentLogger } from '../../lib/log.ts';
import { envFileText } from '../../stack/env-vars.ts';
import { s3rverSettings } from './servers.ts';

export interface TestConsumer {
  registry: Registry;
  /** Messages the runner fetched and handled (each delivery). */
  processed(): Promise<number>;
  /** Stops it cleanly and waits for the stop. */
  stop(): Promise<void>;
}

/** Starts the consumer of `spec` with `flags` as its settings (strings, as on a command line). */
export async function startTestConsumer<S extends TObject>(
  spec: ConsumerSpec<S>,
  flags: Record<string, string>,
): Promise<TestConsumer> {
  const controller = new AbortController();
  const registry = new Registry();
  const config = loadConsumerConfig(spec, { env: {}, flags });
  const run = await startConsumer(spec, config, { log: silentLogger, registry, signal: controller.signal });
  return {
    registry,
    processed: async () =>
      (await registry.getSingleMetric(RunnerMetric.processed)?.get())?.values.reduce(
        (n, v) => n + v.value,
        0,
      ) ?? 0,
    stop: async () => {
      controller.abort();
      await run.done;
    },
  };
}

/** Writes an env file of the cloud commands' settings (`{ natsUrl: … }` → `SWITCHYARD_NATS_URL=…`). */
export function writeCloudEnv(path: string, settings: Record<string, string>): string {
  writeFileSync(path, envFileText(settings));
  return path;
}

/** s3rver's settings as flag or env values (strings). */
export const s3Env = (server: { url: string }): Record<string, string> =>
  Object.fromEntries(Object.entries(s3rverSettings(server)).map(([k, v]) => [k, String(v)]));
