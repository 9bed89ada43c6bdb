/** Both time-series engines as the engine tests fill and read them. */
import assert from 'node:assert/strict';
import { createIngestSink, type IngestSinkConfig } from '../../cloud/ingest/config.ts';
import type { FieldStats } from '../../cloud/ingest/readers/index.ts';
import type { SinkMessage } from '../../cloud/sink.ts';
import { silentLogger } from '../../lib/log.ts';
import type { RunningServer } from '../../stack/server-process.ts';

export const HOUR_MS = 3_600_000;

/** One telemetry reading a test sent, as the engines should read it back. */
export interface Reading {
  site: string;
  device: string;
  ts: number;
  SoC: number;
  W: number;
}

/** count, min, max and sum of `values`. */
export const stats = (values: number[]): FieldStats => ({
  count: values.length,
  min: Math.min(...values),
  max: Math.max(...values),
  sum: values.reduce((a, b) => a + b, 0),
});

/** `YYYY-MM-DDTHH` of the UTC hour holding `ms`. */
export const hourText = (ms: number): string => new Date(ms - (ms % HOUR_MS)).toISOString().slice(0, 13);

/** The ingest settings of both engines, as `switchyard ingest` takes them. */
export function ingestConfig(vm: RunningServer, influxdb: RunningServer): IngestSinkConfig {
  return {
    sink: 'influx2',
    influx2Url: vm.url,
    influx2Token: '',
    influx2Org: 'switchyard',
    influx2Bucket: 'switchyard',
    influx1Url: influxdb.url,
    influx1Database: 'switchyard',
    influxRequestTimeoutMs: 10_000,
    influxMaxRequestBytes: 4 * 1024 * 1024,
    influxGzip: false,
  };
}

/** Writes `messages` to both engines through the ingest sinks; every message must be accepted. */
export async function ingestIntoBoth(
  config: IngestSinkConfig,
  messages: readonly SinkMessage[],
): Promise<void> {
  await Promise.all(
    (['influx1', 'influx2'] as const).map(async (sink) => {
      const ingest = createIngestSink({ ...config, sink }, silentLogger);
      try {
        for (let i = 0; i < messages.length; i += 500) {
          const result = await ingest.write(messages.slice(i, i + 500), AbortSignal.timeout(30_000));
          assert.deepEqual(result.rejected, [], `${sink} accepts every message`);
        }
      } finally {
        await ingest.close();
      }
    }),
  );
}
