/**
 * The sequence of messages a fleet of simulated BSUs sends, without any MQTT: topics, payload
 * bytes, which ones are invalid on purpose. Deterministic: the same options give the same sequence,
 * which is what the benchmarks and tests rely on. The publisher (simulator.ts) only paces and sends.
 *
 * Each device reads its bank every `telemetryEveryMs` of device time and publishes a telemetry
 * message, a status message when it starts, every `statusEveryMs` and when its state changes, and an
 * event for each alarm raised or cleared. Devices are staggered across the interval and the fleet's
 * messages come out in device-time order.
 */
import { isValidId, type DeviceKind } from '../schemas/index.ts';
import {
  createDeviceSpec,
  createDeviceState,
  readingsOf,
  stepDevice,
  type DeviceSpec,
  type DeviceState,
} from './device-model.ts';
import {
  CORRUPTIONS,
  eventPayload,
  invalidPayload,
  isoTime,
  statusPayload,
  telemetryPayload,
  type Corruption,
} from './payloads.ts';
import { deriveSeed, mulberry32, pick, type Random } from './random.ts';

/** Where `ts` comes from. */
export const SimClock = {
  /** Start time plus device time: reproducible; runs ahead of the wall clock when the rate is high. */
  virtual: 'virtual',
  /** The wall clock when the message is built: for live demos. */
  wall: 'wall',
} as const;
export type SimClock = (typeof SimClock)[keyof typeof SimClock];

export interface TrafficOptions {
  devices: number;
  /** Device ids are `<prefix>-0001`, `<prefix>-0002`, … */
  devicePrefix: string;
  seed: number;
  /** Device time between two telemetry readings of one device, ms. */
  telemetryEveryMs: number;
  /** Device time between two periodic status messages of one device, ms. */
  statusEveryMs: number;
  /** Every n-th telemetry of a device carries per-string and per-module readings; 0: never. */
  detailEvery: number;
  clock: SimClock;
  /** Epoch ms of device time 0 (virtual clock). */
  startTimeMs: number;
  /** Total messages, when known: then exactly round(invalidRatio × count) are invalid. */
  count?: number;
  /** Share of messages made invalid on purpose, 0..1. */
  invalidRatio: number;
  /** Wall clock for `clock: wall` (tests pin it). */
  now?: () => number;
}

/** One message to publish. */
export interface SimMessage {
  /** 0-based position in the sequence. */
  index: number;
  device: string;
  /** 0-based position of the device in the fleet. */
  deviceIndex: number;
  kind: DeviceKind;
  /** `bsu/<device>/<kind>`. */
  topic: string;
  payload: Buffer;
  /** How the payload was made invalid on purpose; unset for a valid one. */
  invalid?: Corruption;
}

/** MQTT topic a device publishes a kind on. */
export const topicFor = (device: string, kind: DeviceKind): string => `bsu/${device}/${kind}`;

/** Id of the i-th device (0-based): `bsu-0001`. */
export const deviceId = (prefix: string, i: number): string => `${prefix}-${String(i + 1).padStart(4, '0')}`;

interface Device {
  id: string;
  index: number;
  spec: DeviceSpec;
  state: DeviceState;
  rng: Random;
  /** Offset of this device's readings within the interval, ms: devices do not all read at once. */
  phaseMs: number;
  seq: number;
  /** Epoch ms of its last message: a device's clock never repeats a reading's time. */
  lastTsMs: number;
  readings: number;
  lastStatusMs: number;
  lastStatusKey: string;
}

interface Pending {
  device: Device;
  kind: DeviceKind;
  build: (ts: string | number, seq: number) => object;
}

/**
 * Positions of the invalid messages among `count`: `k` of them, one in each of `k` equal slices
 * of the run at a seeded offset, so they are spread through it and their number is exact.
 */
export function invalidPositions(count: number, k: number, rng: Random): Set<number> {
  const out = new Set<number>();
  for (let j = 0; j < k; j++) out.add(Math.floor(((j + rng()) * count) / k));
  return out;
}

/** The fleet's messages, in order; endless (the caller stops at its count or duration). */
export class TrafficGenerator {
  readonly devices: readonly Device[];
  private readonly queue: Pending[] = [];
  private readonly invalidRng: Random;
  private readonly invalidAt?: Set<number>;
  private tick = 0;
  private index = 0;

  constructor(readonly options: TrafficOptions) {
    if (!Number.isInteger(options.devices) || options.devices < 1)
      throw new RangeError('devices must be ≥ 1');
    if (!(options.telemetryEveryMs > 0)) throw new RangeError('telemetryEveryMs must be > 0');
    this.devices = Array.from({ length: options.devices }, (_, i) => {
      const id = deviceId(options.devicePrefix, i);
      if (!isValidId(id)) throw new RangeError(`invalid device id ${JSON.stringify(id)}`);
      const rng = mulberry32(deriveSeed(options.seed, i));
      const spec = createDeviceSpec(rng);
      return {
        id,
        index: i,
        spec,
        state: createDeviceState(spec, rng),
        rng,
        phaseMs: Math.floor((i * options.telemetryEveryMs) / options.devices),
        seq: 0,
        lastTsMs: -Infinity,
        readings: 0,
        lastStatusMs: -Infinity,
        lastStatusKey: '',
      };
    });
    // A stream of its own, so that the invalid choices do not change what the devices do.
    this.invalidRng = mulberry32(deriveSeed(options.seed, -1));
    if (options.count !== undefined) {
      const k = Math.round(options.invalidRatio * options.count);
      this.invalidAt = invalidPositions(options.count, k, this.invalidRng);
    }
  }

  /** Number of messages produced so far. */
  get produced(): number {
    return this.index;
  }

  /** The next message. */
  next(): SimMessage {
    while (this.queue.length === 0) this.advance();
    const pending = this.queue.shift() as Pending;
    const { device, kind } = pending;
    const { options } = this;
    const deviceMs = device.phaseMs + device.state.elapsedMs;
    // On the wall clock a burst (a stalled event loop catching up) would stamp several readings of
    // one device with the same millisecond, and a point is its series and time: engines would keep
    // one of them. A device's clock moves on between two readings.
    const atMs =
      options.clock === SimClock.wall
        ? Math.max((options.now ?? Date.now)(), device.lastTsMs + 1)
        : options.startTimeMs + deviceMs;
    device.lastTsMs = atMs;
    const ts = isoTime(atMs);
    const value = pending.build(ts, device.seq++);
    const index = this.index++;
    const invalid = this.isInvalid(index) ? pick(this.invalidRng, CORRUPTIONS) : undefined;
    const text = invalid
      ? invalidPayload(kind, value as Parameters<typeof invalidPayload>[1], invalid, this.invalidRng)
      : JSON.stringify(value);
    return {
      index,
      device: device.id,
      deviceIndex: device.index,
      kind,
      topic: topicFor(device.id, kind),
      payload: Buffer.from(text),
      ...(invalid ? { invalid } : {}),
    };
  }

  private isInvalid(index: number): boolean {
    if (this.invalidAt) return this.invalidAt.has(index);
    return this.options.invalidRatio > 0 && this.invalidRng() < this.options.invalidRatio;
  }

  /** One reading interval for the whole fleet: every device steps and queues what it sends. */
  private advance(): void {
    const { options } = this;
    for (const device of this.devices) {
      if (this.tick > 0) {
        const { state, changes } = stepDevice(
          device.spec,
          device.state,
          options.telemetryEveryMs,
          device.rng,
        );
        device.state = state;
        for (const alarm of changes.cleared) this.queueEvent(device, alarm, 'cleared');
        for (const alarm of changes.raised) this.queueEvent(device, alarm, 'raised');
      }
      const detail = options.detailEvery > 0 && device.readings % options.detailEvery === 0;
      device.readings++;
      // Built now: the payload is of the state at this tick, whenever it is taken from the queue.
      const telemetry = telemetryPayload(device.spec, device.state, '', 0, device.rng, detail);
      this.queue.push({ device, kind: 'telemetry', build: (ts, seq) => ({ ...telemetry, ts, seq }) });
      const r = readingsOf(device.spec, device.state);
      const key = `${r.state}/${r.chargeStatus}`;
      if (
        key !== device.lastStatusKey ||
        device.state.elapsedMs - device.lastStatusMs >= options.statusEveryMs
      ) {
        device.lastStatusKey = key;
        device.lastStatusMs = device.state.elapsedMs;
        const status = statusPayload(device.spec, device.state, '', 0);
        this.queue.push({ device, kind: 'status', build: (ts, seq) => ({ ...status, ts, seq }) });
      }
    }
    this.tick++;
  }

  private queueEvent(
    device: Device,
    alarm: Parameters<typeof eventPayload>[4],
    action: 'raised' | 'cleared',
  ): void {
    const event = eventPayload(device.spec, device.state, '', 0, alarm, action);
    this.queue.push({ device, kind: 'event', build: (ts, seq) => ({ ...event, ts, seq }) });
  }
}
