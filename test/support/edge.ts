/** A running edge bridge for tests and benchmarks, and an MQTT device publisher that counts what the broker took. */
import mqtt, { type MqttClient } from 'mqtt';
import { EDGE_NODE_OPTIONS } from '../../edge/config.ts';
import { freePort } from '../../lib/process.ts';
import { sleep } from '../../lib/timers.ts';
import { waitFor } from './servers.ts';
import { startSwitchyard, type SwitchyardProcess } from './process.ts';

export interface BridgeProcess extends SwitchyardProcess {
  opsUrl: string;
}

/**
 * Starts `switchyard edge` for `site` and waits until /readyz says ready; if it is not ready within
 * 30 s, kills it and rejects with why it was not and what it printed.
 */
export async function startBridge(options: {
  site: string;
  mqttUrl: string;
  natsUrl: string;
  opsPort?: number;
  env?: Record<string, string>;
  /** Run the build in dist/ (benchmarks measure the bridge as deployed). */
  compiled?: boolean;
}): Promise<BridgeProcess> {
  const opsPort = options.opsPort ?? (await freePort());
  const p = startSwitchyard(
    ['edge'],
    {
      SWITCHYARD_SITE: options.site,
      SWITCHYARD_MQTT_URL: options.mqttUrl,
      SWITCHYARD_NATS_URL: options.natsUrl,
      SWITCHYARD_OPS_PORT: String(opsPort),
      SWITCHYARD_GATEWAY: `gw-${options.site}`,
      SWITCHYARD_STATS_INTERVAL_MS: '200',
      SWITCHYARD_LOG_LEVEL: 'warn',
      ...options.env,
    },
    options.compiled ? { compiled: true, nodeOptions: [...EDGE_NODE_OPTIONS] } : {},
  );
  const opsUrl = `http://127.0.0.1:${opsPort}`;
  try {
    await waitFor(
      `bridge for ${options.site} ready`,
      async () => {
        if (p.child.exitCode !== null) throw new Error('bridge exited');
        const res = await fetch(`${opsUrl}/readyz`);
        // Thrown, so that a timeout names the last reasons rather than an early refused connection.
        if (!res.ok) throw new Error(`not ready: ${await res.text()}`);
        return true;
      },
      30_000,
    );
  } catch (err) {
    // Left running, it would keep the test process alive after the test failed.
    await p.stop('SIGKILL');
    throw new Error(`${(err as Error).message}; bridge output: ${p.output()}`, { cause: err });
  }
  return { ...p, opsUrl };
}

/**
 * The JSON text of a fixed telemetry reading (about 300 bytes) with `seq` and device time `tsMs`:
 * for tests that need a valid payload, not a simulated device (simulate/payloads.ts builds those).
 */
export function telemetryJson(seq: number, tsMs = Date.now()): string {
  return JSON.stringify({
    ts: new Date(tsMs).toISOString(),
    seq,
    SoC: 40 + (seq % 50),
    SoH: 97.5,
    DoD: 60 - (seq % 50),
    NCyc: 412,
    V: 812.4,
    A: -12.3,
    W: -9992,
    CellVMax: 3.412,
    CellVMin: 3.361,
    CellVAvg: 3.387,
    ModTmpMax: 31.2,
    ModTmpMin: 27.9,
    ModTmpAvg: 29.4,
    ac: { W: -9800, VA: 9850, Var: 310, PF: 0.99, Hz: 50.01, TotWhInj: 1234567, TotWhAbs: 2345678 },
  });
}

/** The JSON text of a fixed status message with `seq` and device time `tsMs`. */
export const statusJson = (seq: number, tsMs = Date.now()): string =>
  JSON.stringify({
    ts: tsMs,
    seq,
    State: 'CONNECTED',
    ChaSt: 'CHARGING',
    LocRemCtl: 'REMOTE',
    Hb: seq,
    uptimeS: 3600,
    firmware: '2.4.1',
  });

/** A device-side MQTT client that publishes QoS 1 and counts PUBACKed messages. */
export class DevicePublisher {
  readonly client: MqttClient;
  acked = 0;

  private constructor(client: MqttClient) {
    this.client = client;
  }

  static async connect(
    url: string,
    clientId = `devices-${process.pid}-${Math.random().toString(36).slice(2, 8)}`,
  ) {
    const client = await mqtt.connectAsync(url, { clientId, clean: true, reconnectPeriod: 500 });
    return new DevicePublisher(client);
  }

  async publish(topic: string, payload: string | Buffer): Promise<void> {
    await this.client.publishAsync(topic, payload, { qos: 1 });
    this.acked++;
  }

  close(): Promise<void> {
    return this.client.endAsync();
  }
}

/** Publishes telemetry from `devices` at about `ratePerS` until stopped; per-device seq counts up. */
export class SteadyLoad {
  private running = true;
  private readonly done: Promise<void>;
  readonly sent = new Map<string, number>();

  constructor(
    private readonly publisher: DevicePublisher,
    devices: string[],
    ratePerS: number,
  ) {
    for (const d of devices) this.sent.set(d, 0);
    this.done = this.loop(devices, ratePerS);
  }

  private paused = false;

  private async loop(devices: string[], ratePerS: number): Promise<void> {
    const tickMs = 20;
    const perTick = Math.max(1, Math.round((ratePerS * tickMs) / 1000));
    let i = 0;
    while (this.running) {
      if (!this.paused) {
        const batch: Promise<void>[] = [];
        for (let k = 0; k < perTick; k++) {
          const device = devices[i++ % devices.length]!;
          const seq = this.sent.get(device)! + 1;
          this.sent.set(device, seq);
          batch.push(this.publisher.publish(`bsu/${device}/telemetry`, telemetryJson(seq)));
        }
        await Promise.all(batch);
      }
      await sleep(tickMs);
    }
  }

  get total(): number {
    return [...this.sent.values()].reduce((a, b) => a + b, 0);
  }

  /**
   * Stops publishing; resolves once every message sent so far was PUBACKed by the broker. `sent`
   * counts a message before it is handed to MQTT, so `total` is final once `paused` is set.
   */
  async pause(): Promise<void> {
    this.paused = true;
    await waitFor('broker acks', () => this.publisher.acked >= this.total, 30_000, 20);
  }

  resume(): void {
    this.paused = false;
  }

  async stop(): Promise<void> {
    this.running = false;
    await this.done;
  }
}

/** Site stream limits for tests: budgets no test fills, an hour of age, the default window. */
export const SITE_LIMITS = {
  telemetryMaxBytes: 256 * 1024 ** 2,
  eventsMaxBytes: 64 * 1024 ** 2,
  invalidMaxBytes: 64 * 1024 ** 2,
  maxAgeS: 3600,
  duplicateWindowS: 900,
};
