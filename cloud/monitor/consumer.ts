/** The monitor consumer: the latest state of every unit in Redis (docs/consumers.md). */
import type { ConsumerSpec } from '../consumer.ts';
import { redisInsecurities } from '../../lib/redis.ts';
import { MonitorConfigSchema, RedisMonitorSink } from './sink.ts';

export const monitorConsumer = {
  name: 'monitor',
  description:
    'Consumes the hub stream BSU with its own durable and keeps, per unit, the latest telemetry, status and ' +
    'active alarms in Redis, moving only forward in device time; counts units online, offline and faulted per ' +
    'site, and announces every change on the Redis stream bsu:changes. Readings of a unit that a newer one in ' +
    'the same batch supersedes are folded into it before they reach Redis (conflation).',
  sinkConfigSchema: MonitorConfigSchema,
  // Low latency: take what is pending rather than wait for a full batch. A backlog comes in large
  // batches, where conflation folds the readings of a unit into one update (conflate.ts).
  runnerDefaults: {
    batchSize: 2_000,
    fillBatch: false,
    fetchExpiresMs: 5_000,
    ackWaitMs: 30_000,
    maxAckPending: 10_000,
    opsPort: 9465,
  },
  insecurities: (config) => redisInsecurities(config),
  createSink: (config, log, registry) =>
    new RedisMonitorSink({ ...config, consumer: config.durable, log, registry }),
} satisfies ConsumerSpec<typeof MonitorConfigSchema>;
