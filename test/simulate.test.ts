import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { join } from 'node:path';
import { promisify } from 'node:util';
import mqtt, { type MqttClient } from 'mqtt';
import { decodePayload, type DeviceKind } from '../schemas/index.ts';
import {
  createDeviceSpec,
  createDeviceState,
  readingsOf,
  stepDevice,
  type DeviceSpec,
  type DeviceState,
} from '../simulate/device-model.ts';
import { CORRUPTION_FOUND_AS } from '../simulate/payloads.ts';
import { mulberry32 } from '../simulate/random.ts';
import { simulateConfig, type SimulateConfig } from '../simulate/config.ts';
import { runSimulator, SimulatorError } from '../simulate/simulator.ts';
import { TrafficGenerator, type SimMessage, type TrafficOptions } from '../simulate/traffic.ts';
import { childEnv } from '../lib/env.ts';
import { ConfigError } from '../lib/errors.ts';
import { BRIDGE_MQTT_USERNAME, bridgeMqttUser, brokerDir, enrolDevices } from '../stack/mosquitto.ts';
import { writeDevicesFile } from '../simulate/devices-file.ts';
import { TestServers, waitFor } from './support/servers.ts';

const run = promisify(execFile);
const START = '2025-06-01T00:00:00.000Z';

const traffic = (overrides: Partial<TrafficOptions> = {}): TrafficGenerator =>
  new TrafficGenerator({
    devices: 5,
    devicePrefix: 'bsu',
    seed: 42,
    telemetryEveryMs: 1000,
    statusEveryMs: 10_000,
    detailEvery: 0,
    clock: 'virtual',
    startTimeMs: Date.parse(START),
    invalidRatio: 0,
    ...overrides,
  });

const take = (g: TrafficGenerator, n: number): SimMessage[] => Array.from({ length: n }, () => g.next());
const kindOf = (topic: string): DeviceKind => topic.split('/')[2] as DeviceKind;

/**
 * A unit following a power schedule (no standby, no fault, no transient alarm) for `steps` of
 * `dtMs`; `setpoint` is a constant or a function of the step.
 */
function drive(
  setpoint: number | ((step: number) => number),
  steps: number,
  dtMs = 1000,
  seed = 3,
): { spec: DeviceSpec; states: DeviceState[] } {
  const at = typeof setpoint === 'number' ? () => setpoint : setpoint;
  const rng = mulberry32(seed);
  const spec = createDeviceSpec(rng);
  let state: DeviceState = {
    ...createDeviceState(spec, rng),
    socPct: 50,
    setpointW: at(0),
    powerW: at(0),
    setpointUntilMs: Infinity,
  };
  const states = [state];
  // Draws in [0.5, 1): never below an event's small probability, so nothing interrupts the schedule.
  const quiet = mulberry32(seed + 1);
  const noEvents = () => 0.5 + quiet() * 0.5;
  for (let i = 1; i <= steps; i++) {
    state = stepDevice(spec, { ...state, setpointW: at(i) }, dtMs, noEvents).state;
    states.push(state);
  }
  return { spec, states };
}

describe('device model', () => {
  test('SoC falls while discharging and rises while charging, by the energy against the capacity', () => {
    const dis = drive(50_000, 600);
    const first = dis.states[0] as DeviceState;
    const last = dis.states.at(-1) as DeviceState;
    assert.ok(last.socPct < first.socPct, `discharging: ${first.socPct} → ${last.socPct}`);
    // 50 kW for 10 min ≈ 8.3 kWh (± noise) out of the usable capacity.
    const expected = ((50_000 * (600 / 3600)) / ((dis.spec.capacityWh * first.sohPct) / 100)) * 100;
    assert.ok(
      Math.abs(first.socPct - last.socPct - expected) < expected * 0.1,
      `${first.socPct - last.socPct} vs ${expected}`,
    );
    for (let i = 1; i < dis.states.length; i++)
      assert.ok((dis.states[i] as DeviceState).socPct < (dis.states[i - 1] as DeviceState).socPct);

    const cha = drive(-50_000, 600);
    assert.ok((cha.states.at(-1) as DeviceState).socPct > (cha.states[0] as DeviceState).socPct);
  });

  test('temperature follows the current', () => {
    const busy = drive(100_000, 1200).states.at(-1) as DeviceState;
    const idle = drive(0, 1200).states.at(-1) as DeviceState;
    assert.ok(busy.tempC > idle.tempC + 1, `busy ${busy.tempC} °C, idle ${idle.tempC} °C`);
  });

  test('the cycle count grows with energy throughput', () => {
    // Two hours discharging, two hours charging, for two days, in 10-minute steps.
    const { spec, states } = drive(
      (step) => (Math.floor(step / 12) % 2 === 0 ? 80_000 : -80_000),
      288,
      600_000,
    );
    const first = states[0] as DeviceState;
    const last = states.at(-1) as DeviceState;
    const cycles = readingsOf(spec, last).cycles - readingsOf(spec, first).cycles;
    assert.ok(cycles >= 2, `${cycles} cycles from ${last.throughputWh} Wh through ${spec.capacityWh} Wh`);
    assert.equal(cycles, Math.floor(last.throughputWh / (2 * spec.capacityWh)));
    assert.ok(last.sohPct < first.sohPct, 'wear');
    // SoC stays within what the controller allows.
    for (const s of states)
      assert.ok(s.socPct >= spec.socMinPct - 1 && s.socPct <= spec.socMaxPct + 1, `${s.socPct}`);
  });

  test('voltage rises with SoC, and sags under discharge', () => {
    const rng = mulberry32(9);
    const spec = createDeviceSpec(rng);
    const base = createDeviceState(spec, rng);
    const v = (socPct: number, powerW: number) => readingsOf(spec, { ...base, socPct, powerW }).voltageV;
    assert.ok(v(20, 0) < v(50, 0) && v(50, 0) < v(90, 0));
    assert.ok(v(50, 80_000) < v(50, 0) && v(50, -80_000) > v(50, 0));
  });

  test('the AC side is the DC power through the inverter, and the charge status follows the sign', () => {
    const rng = mulberry32(11);
    const spec = createDeviceSpec(rng);
    const base = createDeviceState(spec, rng);
    const dis = readingsOf(spec, { ...base, powerW: 60_000, setpointW: 60_000 });
    const cha = readingsOf(spec, { ...base, powerW: -60_000, setpointW: -60_000 });
    assert.ok(dis.acW > 0 && dis.acW < 60_000 && dis.acW > 60_000 * 0.9);
    assert.ok(cha.acW < -60_000 && cha.acW > -60_000 / 0.9);
    assert.ok(dis.acPF > 0 && cha.acPF < 0 && Math.abs(dis.acPF) <= 1);
    assert.equal(dis.chargeStatus, 'DISCHARGING');
    assert.equal(cha.chargeStatus, 'CHARGING');
    assert.equal(readingsOf(spec, { ...base, powerW: 0, socPct: 50 }).chargeStatus, 'HOLDING');
  });
});

describe('traffic', () => {
  test('the same seed gives the same topics and payloads; another seed does not', () => {
    const a = take(traffic(), 3000);
    const b = take(traffic(), 3000);
    assert.deepEqual(
      a.map((m) => [m.topic, m.payload.toString()]),
      b.map((m) => [m.topic, m.payload.toString()]),
    );
    const c = take(traffic({ seed: 43 }), 3000);
    assert.notDeepEqual(
      a.map((m) => m.payload.toString()),
      c.map((m) => m.payload.toString()),
    );
  });

  test('a device behaves the same whatever the size of the fleet', () => {
    const ofFirst = (g: TrafficGenerator, n: number) =>
      take(g, n)
        .filter((m) => m.device === 'bsu-0001')
        .slice(0, 100)
        .map((m) => m.payload.toString());
    assert.deepEqual(ofFirst(traffic({ devices: 2 }), 400), ofFirst(traffic({ devices: 3 }), 600));
  });

  test('exactly round(ratio × count) payloads are invalid, spread through the run, and only those fail', () => {
    const count = 5000;
    const messages = take(traffic({ count, invalidRatio: 0.037 }), count);
    const invalid = messages.filter((m) => m.invalid);
    assert.equal(invalid.length, Math.round(0.037 * count));
    for (const m of messages) {
      const result = decodePayload(m.kind, m.payload);
      assert.equal(result.ok, !m.invalid, `${m.invalid ?? 'valid'}: ${m.payload.toString()}`);
      if (!result.ok && m.invalid) assert.equal(result.code, CORRUPTION_FOUND_AS[m.invalid], m.invalid);
    }
    // One in each tenth of the run, roughly: spread, not bunched.
    const tenths = new Set(invalid.map((m) => Math.floor((m.index * 10) / count)));
    assert.equal(tenths.size, 10);
    assert.ok(new Set(invalid.map((m) => m.invalid)).size >= 4, 'several kinds of invalid payload');
  });

  test('mostly telemetry of about 300 bytes, with status and events', () => {
    const messages = take(traffic({ devices: 20 }), 40_000);
    const byKind = { telemetry: 0, status: 0, event: 0 };
    let telemetryBytes = 0;
    for (const m of messages) {
      byKind[m.kind]++;
      if (m.kind === 'telemetry') telemetryBytes += m.payload.byteLength;
    }
    assert.ok(byKind.telemetry / messages.length > 0.85, JSON.stringify(byKind));
    assert.ok(byKind.status > 0 && byKind.event > 0, JSON.stringify(byKind));
    const mean = telemetryBytes / byKind.telemetry;
    assert.ok(mean > 250 && mean < 380, `mean telemetry size ${mean}`);
  });

  test('readings carry per-string and per-module values when asked', () => {
    const [first] = take(traffic({ detailEvery: 10 }), 1);
    const value = JSON.parse((first as SimMessage).payload.toString());
    assert.ok(value.strings.length >= 2 && value.modules.length >= 16);
    assert.equal(decodePayload('telemetry', (first as SimMessage).payload).ok, true);
  });

  test('per device, seq goes up by one and device time never goes back', () => {
    const last = new Map<string, { seq: number; ts: number }>();
    for (const m of take(traffic({ devices: 7 }), 5000)) {
      const { seq, ts } = JSON.parse(m.payload.toString());
      const prev = last.get(m.device);
      if (prev) {
        assert.equal(seq, prev.seq + 1);
        assert.ok(Date.parse(ts) >= prev.ts);
      }
      last.set(m.device, { seq, ts: Date.parse(ts) });
    }
  });

  test('SoC in telemetry moves in the direction the power implies', () => {
    const last = new Map<string, { SoC: number }>();
    let checked = 0;
    for (const m of take(traffic({ devices: 4 }), 4 * 3 * 3600)) {
      if (m.kind !== 'telemetry') continue;
      const t = JSON.parse(m.payload.toString());
      const prev = last.get(m.device);
      if (prev && Math.abs(t.W) > 2000) {
        const delta = t.SoC - prev.SoC;
        if (delta !== 0)
          assert.equal(Math.sign(delta), -Math.sign(t.W), `${m.device} W ${t.W} SoC ${prev.SoC} → ${t.SoC}`);
        checked++;
      }
      last.set(m.device, t);
    }
    assert.ok(checked > 1000, `checked ${checked}`);
  });

  test('over hours, devices change state and raise and clear alarms', () => {
    const states = new Set<string>();
    const raised = new Map<string, number>();
    let cleared = 0;
    for (const m of take(traffic({ devices: 10 }), 10 * 4 * 3600)) {
      const v = JSON.parse(m.payload.toString());
      if (m.kind === 'status') states.add(`${v.State}/${v.ChaSt}`);
      if (m.kind === 'event') {
        const key = `${m.device}/${v.alarm}`;
        if (v.action === 'raised') raised.set(key, (raised.get(key) ?? 0) + 1);
        else {
          assert.ok((raised.get(key) ?? 0) > 0, `${key} cleared but never raised`);
          raised.set(key, (raised.get(key) ?? 0) - 1);
          cleared++;
        }
      }
    }
    for (const s of ['CONNECTED/CHARGING', 'CONNECTED/DISCHARGING', 'STANDBY/HOLDING'])
      assert.ok(states.has(s), `${s} in ${[...states]}`);
    assert.ok(cleared > 10, `cleared ${cleared}`);
  });
});

describe('switchyard simulate against a real broker', () => {
  const servers = new TestServers('simulate');
  let url: string;
  let subscriber: MqttClient;
  let received: { topic: string; payload: Buffer }[] = [];

  before(async () => {
    url = (await servers.mosquitto()).url;
    subscriber = await mqtt.connectAsync(url, { clientId: 'simulate-test-sub', clean: true });
    subscriber.on('message', (topic, payload) => received.push({ topic, payload: Buffer.from(payload) }));
    await subscriber.subscribeAsync('bsu/#', { qos: 1 });
  });
  after(async () => {
    await subscriber?.endAsync();
    await servers.stopAll();
  });

  /**
   * Publishes a marker once the broker has acknowledged everything sent, and resolves when it
   * arrives: the broker delivers to the subscriber in the order it took messages, so whatever was
   * sent before has arrived too. The marker itself is not kept in `received`.
   */
  const markerArrived = async (): Promise<void> => {
    const marker = `bsu/marker-${Math.random().toString(36).slice(2)}/end`;
    let seen = false;
    const onMessage = (topic: string): void => {
      if (topic === marker) seen = true;
    };
    subscriber.on('message', onMessage);
    try {
      await subscriber.publishAsync(marker, 'end', { qos: 1 });
      await waitFor('the marker at the subscriber', () => seen, 10_000, 5);
      received = received.filter((m) => m.topic !== marker);
    } finally {
      subscriber.off('message', onMessage);
    }
  };

  const options = (overrides: Partial<SimulateConfig>): SimulateConfig =>
    simulateConfig({ mqtt: url, devices: 6, rate: 2000, startTime: START, seed: 7, ...overrides });

  test('every payload arrives and validates, except exactly the invalid share; seq rises per device', async () => {
    received = [];
    const count = 1200;
    const report = await runSimulator(options({ count, invalidRatio: 0.1 }), new AbortController().signal);
    await waitFor('every message at the subscriber', () => received.length >= count, 10_000);
    await markerArrived();
    assert.equal(received.length, count, 'nothing more than was sent');
    assert.equal(report.sent, count);
    assert.equal(report.unacknowledged, 0);
    assert.equal(report.invalid.total, 120);

    let invalid = 0;
    const byKind = { telemetry: 0, status: 0, event: 0 };
    const lastSeq = new Map<string, number>();
    for (const { topic, payload } of received) {
      const [, device, kind] = topic.split('/') as [string, string, DeviceKind];
      byKind[kind]++;
      const result = decodePayload(kind, payload);
      if (!result.ok) {
        invalid++;
        continue;
      }
      const prev = lastSeq.get(device) ?? -1;
      assert.ok(result.seq > prev, `${device}: seq ${result.seq} after ${prev}`);
      lastSeq.set(device, result.seq);
    }
    assert.equal(invalid, 120);
    assert.deepEqual(byKind, report.byKind);
    assert.equal(
      Object.values(report.invalid.byReason).reduce((a, b) => a + b, 0),
      120,
    );
    assert.equal(lastSeq.size, 6);
  });

  test('what reaches the broker is exactly the in-process sequence for the seed', async () => {
    received = [];
    const config = options({ count: 500, invalidRatio: 0.02 });
    await runSimulator(config, new AbortController().signal);
    await waitFor('every message at the subscriber', () => received.length >= 500, 10_000);
    const expected = take(
      traffic({ devices: 6, seed: 7, count: 500, invalidRatio: 0.02, startTimeMs: Date.parse(START) }),
      500,
    );
    assert.deepEqual(
      received.map((m) => [m.topic, m.payload.toString()]),
      expected.map((m) => [m.topic, m.payload.toString()]),
    );
  });

  test('paces to the rate asked for', async () => {
    const started = performance.now();
    const report = await runSimulator(options({ count: 300, rate: 500 }), new AbortController().signal);
    const seconds = (performance.now() - started) / 1000;
    // Never faster than asked; slower only by what a loaded 2-core machine's scheduler costs.
    assert.ok(seconds >= 0.55 && seconds < 3, `300 messages at 500/s took ${seconds} s`);
    assert.ok(report.ratePerS <= 550 && report.ratePerS >= 250, `rate ${report.ratePerS}`);
  });

  test('stops on its signal, with every message sent acknowledged', async () => {
    received = [];
    const controller = new AbortController();
    setTimeout(() => controller.abort(), 400);
    const report = await runSimulator(options({ rate: 1000 }), controller.signal);
    assert.equal(report.stoppedBy, 'signal');
    assert.ok(report.sent > 100 && report.sent < 1000, `sent ${report.sent}`);
    await waitFor('every message at the subscriber', () => received.length >= report.sent, 10_000);
    assert.equal(received.length, report.sent);
  });

  test('stops after its duration', async () => {
    const report = await runSimulator(options({ rate: 100, duration: 0.5 }), new AbortController().signal);
    assert.equal(report.stoppedBy, 'duration');
    assert.ok(report.sent >= 45 && report.sent <= 55, `sent ${report.sent}`);
  });

  test('fails with one line when the broker cannot be reached', async () => {
    await assert.rejects(
      runSimulator(
        simulateConfig({ mqtt: 'mqtt://127.0.0.1:1', count: 10, connectRetries: 1 }),
        new AbortController().signal,
      ),
      (err: Error) =>
        err instanceof SimulatorError &&
        /^cannot reach the MQTT broker at mqtt:\/\/127\.0\.0\.1:1 after 2 attempts: /.test(err.message) &&
        !err.message.includes('\n'),
    );
  });

  test('the CLI publishes and prints a JSON summary', async () => {
    received = [];
    const { stdout, stderr } = await run('node', [
      'bin/switchyard.mjs',
      'simulate',
      '--mqtt',
      url,
      '--devices',
      '3',
      '--count',
      '200',
      '--rate',
      '1000',
      '--invalid-ratio',
      '0.05',
      '--json',
    ]);
    assert.equal(stderr, '');
    const report = JSON.parse(stdout.trim());
    assert.equal(report.sent, 200);
    assert.equal(report.invalid.total, 10);
    assert.equal(report.byKind.telemetry + report.byKind.status + report.byKind.event, 200);
    await waitFor('every message at the subscriber', () => received.length >= 200, 10_000);
    assert.equal(received.filter((m) => !decodePayload(kindOf(m.topic), m.payload).ok).length, 10);
  });
});

describe('switchyard simulate command line', { concurrency: true }, () => {
  const cli = async (args: string[], env: Record<string, string> = {}) => {
    try {
      const { stdout, stderr } = await run('node', ['bin/switchyard.mjs', 'simulate', ...args], {
        env: childEnv(env),
      });
      return { code: 0, stdout, stderr };
    } catch (err) {
      const e = err as { code: number; stdout: string; stderr: string };
      return { code: e.code, stdout: e.stdout, stderr: e.stderr };
    }
  };

  test('--help exits 0 and lists the options', async () => {
    const { code, stdout } = await cli(['--help']);
    assert.equal(code, 0);
    for (const flag of [
      '--mqtt',
      '--devices',
      '--rate',
      '--count',
      '--duration',
      '--invalid-ratio',
      '--seed',
      '--device-prefix',
      '--telemetry-every-ms',
      '--clock',
      '--start-time',
      '--json',
      '--config',
    ])
      assert.ok(stdout.includes(flag), `${flag} in help`);
  });

  const usage: [string, string[], RegExp][] = [
    [
      'a rate that is not a number',
      ['--rate', 'fast'],
      /^switchyard: bad config: rate: expected number, got "fast"$/,
    ],
    [
      'a ratio above 1',
      ['--invalid-ratio', '1.5'],
      /^switchyard: bad config: invalidRatio: must be at most 1, got 1\.5$/,
    ],
    [
      'both count and duration',
      ['--count', '10', '--duration', '5'],
      /^switchyard: bad config: count and duration: give one or the other$/,
    ],
    [
      'a start time without a zone',
      ['--start-time', '2025-01-01T00:00:00'],
      /^switchyard: bad config: startTime: /,
    ],
    ['a prefix with a dot', ['--device-prefix', 'a.b'], /^switchyard: bad config: devicePrefix: /],
    ['an unknown flag', ['--frobnicate'], /^error: unknown option '--frobnicate'/],
  ];
  for (const [what, args, message] of usage) {
    test(`exits 2 with one line on ${what}`, async () => {
      const { code, stderr } = await cli(args);
      assert.equal(code, 2);
      const lines = stderr
        .trim()
        .split('\n')
        .filter((l) => !l.startsWith('(add --help'));
      assert.equal(lines.length, 1, stderr);
      assert.match(lines[0] as string, message);
    });
  }

  test('reads its settings from the environment', async () => {
    const { code, stderr } = await cli([], { SWITCHYARD_DEVICES: '0' });
    assert.equal(code, 2);
    assert.match(stderr, /^switchyard: bad config: devices: must be at least 1, got 0$/m);
  });

  test('exits 1 with one line when the broker is unreachable', async () => {
    const { code, stderr } = await cli([
      '--mqtt',
      'mqtt://127.0.0.1:1',
      '--count',
      '5',
      '--connect-retries',
      '0',
    ]);
    assert.equal(code, 1);
    assert.match(
      stderr,
      /^switchyard: cannot reach the MQTT broker at mqtt:\/\/127\.0\.0\.1:1 after 1 attempts: .*\n$/,
    );
  });
});

describe('switchyard simulate with a devices file, against a broker with a per-device ACL', () => {
  const servers = new TestServers('simulate-auth');
  let url: string;
  let devicesFile: string;
  let reader: MqttClient;
  const publishers = new Map<string, string>();

  before(async () => {
    const broker = await servers.mosquitto({ auth: true });
    url = broker.url;
    const ids = ['auth-0001', 'auth-0002', 'auth-0003'];
    const enrolled = enrolDevices(brokerDir(broker), ids);
    devicesFile = join(brokerDir(broker), 'devices.json');
    process.kill(broker.pid, 'SIGHUP');
    const last = enrolled.at(-1)!;
    await waitFor('the broker to take the devices', () =>
      mqtt.connectAsync(url, { username: last.device, password: last.password, reconnectPeriod: 0 }).then(
        (c) => c.endAsync(true).then(() => true),
        () => false,
      ),
    );
    reader = await mqtt.connectAsync(url, { ...bridgeMqttUser(broker), clientId: 'simulate-auth-reader' });
    assert.equal(bridgeMqttUser(broker).username, BRIDGE_MQTT_USERNAME);
    // The broker's ACL admits a message only under its publisher's own id: count both.
    reader.on('message', (topic) => publishers.set(topic.split('/')[1]!, topic));
    await reader.subscribeAsync('bsu/+/+', { qos: 1 });
  });
  after(async () => {
    await reader?.endAsync();
    await servers.stopAll();
  });

  const options = (overrides: Partial<SimulateConfig>): SimulateConfig =>
    simulateConfig({
      mqtt: url,
      devices: 3,
      devicePrefix: 'auth',
      rate: 500,
      startTime: START,
      devicesFile,
      ...overrides,
    });

  test('every device logs in as itself, and all of its messages get through', async () => {
    const report = await runSimulator(options({ count: 90 }), new AbortController().signal);
    assert.equal(report.sent, 90);
    await waitFor('all three devices at the reader', () => publishers.size === 3);
    assert.deepEqual([...publishers.keys()].sort(), ['auth-0001', 'auth-0002', 'auth-0003']);
  });

  test('a device missing from the file is a config error naming it; anonymous is refused at once', async () => {
    await assert.rejects(
      runSimulator(options({ devices: 4, count: 4 }), new AbortController().signal),
      (err) => {
        assert.ok(err instanceof ConfigError);
        assert.match(err.message, /no password for 1 of the 4 devices \(auth-0004\)/);
        return true;
      },
    );
    const anonymous = options({ count: 3, devicesFile: '', connectRetries: 5 });
    const started = Date.now();
    await assert.rejects(runSimulator(anonymous, new AbortController().signal), (err) => {
      assert.ok(err instanceof SimulatorError);
      assert.match(err.message, /refused an anonymous client/);
      return true;
    });
    assert.ok(Date.now() - started < 2000, 'no retries on a refused login');
    // A wrong password is refused the same way, naming the device but not the password.
    const wrong = join(servers.dir, 'wrong.json');
    writeDevicesFile(wrong, { 'auth-0001': 'not-it', 'auth-0002': 'not-it', 'auth-0003': 'not-it' });
    await assert.rejects(
      runSimulator(options({ count: 3, devicesFile: wrong }), new AbortController().signal),
      (err) => {
        assert.match((err as Error).message, /refused the login of auth-000\d/);
        assert.doesNotMatch((err as Error).message, /not-it/);
        return true;
      },
    );
  });
});
