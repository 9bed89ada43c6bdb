/**
 * Settings of `switchyard simulate`, one flat TypeBox schema: flags (`--devices`), environment
 * (`SWITCHYARD_DEVICES`) and `--config FILE` all come from it (lib/config.ts).
 */
import Type, { type Static } from 'typebox';
import { Compile } from 'typebox/compile';
import Value from 'typebox/value';
import { deviceTimeMs, formatErrors } from '../schemas/index.ts';
import { ConfigError } from '../lib/errors.ts';
import { SimClock } from './traffic.ts';

export const SimulateConfigSchema = Type.Object({
  mqtt: Type.String({
    description: 'MQTT broker the devices publish to (mqtt://host:port)',
    default: 'mqtt://127.0.0.1:1883',
    pattern: '^(mqtts?|wss?|tcp|ssl)://',
  }),
  devices: Type.Integer({
    description: 'number of simulated BSUs',
    default: 10,
    minimum: 1,
    maximum: 100_000,
  }),
  rate: Type.Number({
    description: 'messages per second, all devices together',
    default: 100,
    exclusiveMinimum: 0,
    maximum: 1_000_000,
  }),
  count: Type.Optional(
    Type.Integer({ description: 'stop after this many messages (default: run until stopped)', minimum: 0 }),
  ),
  duration: Type.Optional(
    Type.Number({
      description: 'stop after this many seconds (default: run until stopped)',
      exclusiveMinimum: 0,
    }),
  ),
  invalidRatio: Type.Number({
    description: 'share of messages sent invalid on purpose, 0..1 (exactly round(R × count) with --count)',
    default: 0,
    minimum: 0,
    maximum: 1,
  }),
  seed: Type.Integer({
    description: 'seed of the simulation: same seed, same messages',
    default: 1,
    minimum: 0,
    maximum: 0xffff_ffff,
  }),
  devicePrefix: Type.String({
    description: 'device ids are <prefix>-0001, <prefix>-0002, ...',
    default: 'bsu',
    pattern: '^[A-Za-z0-9_-]{1,64}$',
  }),
  telemetryEveryMs: Type.Integer({
    description: 'device time between two readings of one device, ms',
    default: 1000,
    minimum: 1,
  }),
  statusEveryMs: Type.Integer({
    description: 'device time between two periodic status messages of one device, ms',
    default: 10_000,
    minimum: 1,
  }),
  detailEvery: Type.Integer({
    description: 'every n-th reading of a device includes per-string and per-module values (0: never)',
    default: 0,
    minimum: 0,
  }),
  clock: Type.Enum([SimClock.virtual, SimClock.wall], {
    description: 'ts from start time + device time (virtual, reproducible) or from the wall clock',
    default: SimClock.virtual,
  }),
  startTime: Type.String({
    description:
      'device time of the first reading with --clock virtual: ISO-8601 with zone, epoch ms, or now',
    default: 'now',
  }),
  connections: Type.Integer({
    description: 'MQTT connections the devices share, anonymously (ignored with --devices-file)',
    default: 1,
    minimum: 1,
    maximum: 1000,
  }),
  devicesFile: Type.String({
    description:
      'JSON file of the devices\' MQTT passwords ({"version":1,"devices":{"<id>":"<password>"}}, as ' +
      '`switchyard stack add-device` keeps them in DIR/mqtt-<site>/devices.json): each device then ' +
      'connects as its own user (its id); empty: anonymous, over --connections shared connections',
    default: '',
  }),
  maxInflight: Type.Integer({
    description: 'QoS 1 messages awaiting PUBACK per connection before sending pauses',
    default: 1000,
    minimum: 1,
    maximum: 65_535,
  }),
  connectRetries: Type.Integer({
    description: 'connection attempts to the broker after the first before giving up',
    default: 5,
    minimum: 0,
  }),
  json: Type.Boolean({ description: 'print the summary as one JSON line', default: false }),
});
export type SimulateConfig = Static<typeof SimulateConfigSchema>;

const validator = Compile(SimulateConfigSchema);

/** Epoch ms of a `startTime` setting, or NaN. */
export function parseStartTime(text: string, now: () => number = Date.now): number {
  if (text === 'now') return now();
  if (/^\d+$/.test(text)) return Number(text);
  return deviceTimeMs(text);
}

/** Problems the schema cannot express (combinations of settings), in the schema's wording. */
export function crossCheck(config: SimulateConfig): string[] {
  const problems: string[] = [];
  if (config.count !== undefined && config.duration !== undefined)
    problems.push('count and duration: give one or the other');
  if (Number.isNaN(parseStartTime(config.startTime)))
    problems.push(
      `startTime: expected ISO-8601 with a zone, epoch ms or "now", got ${JSON.stringify(config.startTime)}`,
    );
  return problems;
}

/**
 * Settings for in-process use (`dev`, benchmarks, tests): `partial` over the defaults, validated.
 * Throws ConfigError listing every problem.
 */
export function simulateConfig(partial: Partial<SimulateConfig> = {}): SimulateConfig {
  const config = Value.Default(SimulateConfigSchema, { ...partial }) as SimulateConfig;
  const problems = validator.Check(config)
    ? crossCheck(config)
    : formatErrors('', config, validator.Errors(config)).map((m) => m.replace(/^\./, ''));
  if (problems.length > 0) throw new ConfigError(problems);
  return config;
}
