/**
 * The soak's devices: per site, the simulator's fleet at a steady rate (each device its own MQTT
 * user), plus an injector that sends spoiled and oversized payloads and floods as one device.
 * Every message the broker acknowledged is recorded, with whether the bridge must keep it invalid.
 */
import mqtt, { type MqttClient } from 'mqtt';
import { readDevicesFile } from '../simulate/devices-file.ts';
import { runSimulator } from '../simulate/simulator.ts';
import { simulateConfig } from '../simulate/config.ts';
import { SimClock, deviceId } from '../simulate/traffic.ts';
import type { SimulatorReport } from '../simulate/simulator.ts';
import { addDevices } from '../stack/verbs.ts';
import type { Stack } from '../stack/stack-file.ts';
import type { SentMessage } from './checks.ts';

export interface SoakDevicesOptions {
  seed: number;
  ratePerS: number;
  devices: number;
}

/** Device id prefix of a site's fleet: device ids are unique across sites. */
const prefixOf = (site: string): string => `${site}-bsu`;
/** The injecting device of a site. */
export const injectorOf = (site: string): string => `${site}-inject`;

export class SoakDevices {
  readonly sent: SentMessage[] = [];
  private readonly controller = new AbortController();
  private runs: Promise<SimulatorReport>[] = [];
  private readonly injectors = new Map<string, MqttClient>();
  private injectSeq = 0;
  private readonly fleetIds = new Map<string, string[]>();

  constructor(
    private readonly stack: Stack,
    private readonly options: SoakDevicesOptions,
  ) {}

  async start(): Promise<void> {
    for (const [i, site] of this.stack.sites.entries()) {
      const ids = Array.from({ length: this.options.devices }, (_, d) => deviceId(prefixOf(site), d));
      this.fleetIds.set(site, ids);
      const { devicesFile } = await addDevices(this.stack.dir, site, [...ids, injectorOf(site)]);
      const password = readDevicesFile(devicesFile)[injectorOf(site)]!;
      const client = await mqtt.connectAsync(this.stack.mqtt(site).url, {
        username: injectorOf(site),
        password,
        clientId: injectorOf(site),
        clean: false,
        reconnectPeriod: 500,
      });
      client.on('error', () => undefined);
      this.injectors.set(site, client);
      const config = simulateConfig({
        mqtt: this.stack.mqtt(site).url,
        devices: this.options.devices,
        devicePrefix: prefixOf(site),
        rate: this.options.ratePerS,
        invalidRatio: 0.02,
        clock: SimClock.wall,
        seed: this.options.seed * 100 + i + 1,
        devicesFile,
      });
      this.runs.push(
        runSimulator(
          {
            ...config,
            drainTimeoutMs: 60_000,
            // Uplink cuts and store restarts never reach the broker: the devices stay connected.
            maxOfflineMs: 600_000,
            onPublish: (m) =>
              this.sent.push({
                site,
                device: m.device,
                kind: m.kind,
                payload: m.payload,
                invalid: m.invalid !== undefined,
                sentAtMs: Date.now(),
              }),
          },
          this.controller.signal,
        ),
      );
    }
  }

  /** A valid telemetry reading of the site's fleet, re-stamped now for `device`. */
  private telemetryTemplate(site: string): Record<string, unknown> {
    const fleet = new Set(this.fleetIds.get(site));
    for (let i = this.sent.length - 1; i >= 0; i--) {
      const s = this.sent[i]!;
      if (!s.invalid && s.kind === 'telemetry' && fleet.has(s.device))
        return JSON.parse(Buffer.from(s.payload).toString('utf8')) as Record<string, unknown>;
    }
    throw new Error(`no telemetry sent at ${site} yet`);
  }

  /** Publishes from the site's injector (QoS 1) and records it once the broker acknowledged it. */
  async inject(site: string, kind: string, payload: Buffer, invalid: boolean): Promise<void> {
    const client = this.injectors.get(site)!;
    const device = injectorOf(site);
    await client.publishAsync(`bsu/${device}/${kind}`, payload, { qos: 1 });
    this.sent.push({ site, device, kind, payload, invalid, sentAtMs: Date.now() });
  }

  /** `count` valid telemetry readings from the injector as fast as the broker acknowledges them. */
  async flood(site: string, count: number): Promise<void> {
    const template = this.telemetryTemplate(site);
    const pending: Promise<void>[] = [];
    // One reading per millisecond of the past second(s): engines keep one point per timestamp, and
    // the bridge refuses readings stamped ahead of its clock.
    const firstMs = Date.now() - count;
    for (let i = 0; i < count; i++) {
      const seq = this.injectSeq++;
      const reading = { ...template, ts: new Date(firstMs + i).toISOString(), seq, SoC: (seq % 1000) / 10 };
      pending.push(this.inject(site, 'telemetry', Buffer.from(JSON.stringify(reading)), false));
      if (pending.length >= 100) await Promise.all(pending.splice(0));
    }
    await Promise.all(pending);
  }

  /** Malformed JSON, wrong types, and a payload over the bridge's `maxPayloadBytes`. */
  async injectBad(site: string, oversizeBytes: number): Promise<void> {
    const template = this.telemetryTemplate(site);
    const text = JSON.stringify({ ...template, ts: new Date().toISOString(), seq: this.injectSeq++ });
    await this.inject(site, 'telemetry', Buffer.from(text.slice(0, text.length - 7)), true);
    await this.inject(
      site,
      'telemetry',
      Buffer.from(JSON.stringify({ ...template, SoC: 'full', W: [] })),
      true,
    );
    await this.inject(site, 'status', Buffer.from('[1,2,3]'), true);
    const big = JSON.stringify({ ...template, ts: new Date().toISOString(), pad: 'x'.repeat(oversizeBytes) });
    await this.inject(site, 'telemetry', Buffer.from(big), true);
  }

  /** Stops the devices; resolves with every message the brokers acknowledged. */
  async stop(): Promise<SentMessage[]> {
    this.controller.abort();
    const reports = await Promise.allSettled(this.runs);
    for (const client of this.injectors.values()) await client.endAsync().catch(() => undefined);
    this.injectors.clear();
    for (const r of reports) {
      if (r.status === 'rejected') throw r.reason;
      if (r.value.unacknowledged > 0)
        throw new Error(`${r.value.unacknowledged} messages of ${r.value.mqtt} never acknowledged`);
    }
    return this.sent;
  }
}
