/**
 * The site broker's authentication and ACL, with a real mosquitto and a real bridge: nobody
 * anonymous, a device publishes only under its own id, only the bridge's user reads; and on a real
 * stack, `stack add-device` works live and no password of a stack run reaches a log or `ps`.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readdirSync, readFileSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { jetstreamManager } from '@nats-io/jetstream';
import type { NatsConnection } from '@nats-io/transport-node';
import mqtt, { type IClientOptions, type MqttClient } from 'mqtt';
import { siteStreamNames } from '../schemas/streams.ts';
import {
  BRIDGE_MQTT_USERNAME,
  brokerDir,
  bridgeMqttUser,
  devicesFileOf,
  enrolDevices,
} from '../stack/mosquitto.ts';
import type { RunningServer } from '../stack/server-process.ts';
import type { Stack } from '../stack/stack-file.ts';
import { stackUp } from '../stack/up.ts';
import { addDevices, stackDown } from '../stack/verbs.ts';
import { startBridge, telemetryJson, type BridgeProcess } from './support/edge.ts';
import { natsConnect, readStream } from './support/jetstream.ts';
import { runSwitchyard, startSwitchyard } from './support/process.ts';
import { TestServers, waitFor } from './support/servers.ts';

const SITE = 'site-1';
/** MQTT 5 reason code of a PUBACK or CONNACK refused by authorisation. */
const NOT_AUTHORIZED = 0x87;

/** Connects, or rejects with MQTT.js's error (its `code` is the CONNACK's). Never reconnects. */
const connectOnce = (url: string, options: IClientOptions = {}): Promise<MqttClient> =>
  mqtt.connectAsync(url, { reconnectPeriod: 0, connectTimeout: 5000, ...options });

/** The CONNACK code a login gets: 0 when accepted. */
async function loginCode(url: string, options: IClientOptions): Promise<number> {
  try {
    await (await connectOnce(url, options)).endAsync(true);
    return 0;
  } catch (err) {
    const code = (err as { code?: unknown }).code;
    assert.equal(typeof code, 'number', `not a refused CONNACK: ${(err as Error).message}`);
    return code as number;
  }
}

/** Sum of a Prometheus counter over all its label sets, from a /metrics endpoint. */
async function counterTotal(opsUrl: string, name: string): Promise<number> {
  const text = await (await fetch(`${opsUrl}/metrics`)).text();
  return text
    .split('\n')
    .filter((l) => l.startsWith(`${name}{`) || l.startsWith(`${name} `))
    .reduce((sum, l) => sum + Number(l.slice(l.lastIndexOf(' ') + 1)), 0);
}

describe('site broker with a password file and a per-device ACL', () => {
  const servers = new TestServers('site-broker');
  let broker: RunningServer;
  let nats: RunningServer;
  let nc: NatsConnection;
  let bridge: BridgeProcess;
  let passwords: Record<string, string>;

  before(async () => {
    broker = await servers.mosquitto({ auth: true });
    nats = await servers.nats({ domain: SITE });
    const enrolled = enrolDevices(brokerDir(broker), ['dev-a', 'dev-b']);
    passwords = Object.fromEntries(enrolled.map((e) => [e.device, e.password]));
    // The broker read its users when it started, before these two: reload it, as add-device does.
    process.kill(broker.pid, 'SIGHUP');
    await waitFor(
      'the broker to take dev-b',
      async () => (await loginCode(broker.url, { username: 'dev-b', password: passwords['dev-b']! })) === 0,
      10_000,
      50,
    );
    const user = bridgeMqttUser(broker);
    assert.equal(user.username, BRIDGE_MQTT_USERNAME);
    bridge = await startBridge({
      site: SITE,
      mqttUrl: broker.url,
      natsUrl: nats.url,
      // The password from a file, as systemd's LoadCredential= hands it to the bridge.
      env: { SWITCHYARD_MQTT_USERNAME: user.username, SWITCHYARD_MQTT_PASSWORD_FILE: user.passwordFile! },
    });
    nc = await natsConnect(nats.url);
  });

  after(async () => {
    await nc?.close();
    await bridge?.stop();
    await servers.stopAll();
  });

  /** Subjects of everything the bridge stored in the site's streams. */
  async function storedSubjects(): Promise<string[]> {
    const names = siteStreamNames(SITE);
    const jsm = await jetstreamManager(nc);
    const out: string[] = [];
    for (const stream of [names.telemetry, names.events]) {
      const exists = await jsm.streams.info(stream).then(
        () => true,
        () => false,
      );
      if (exists) out.push(...(await readStream(nc, stream)).map((m) => m.subject));
    }
    return out;
  }

  test('refuses an anonymous client and a wrong password, with MQTT 3.1.1 and 5', async () => {
    for (const protocolVersion of [4, 5] as const) {
      const anonymous = await loginCode(broker.url, { protocolVersion });
      const wrong = await loginCode(broker.url, { protocolVersion, username: 'dev-a', password: 'not-it' });
      const unknown = await loginCode(broker.url, { protocolVersion, username: 'dev-z', password: 'x' });
      // 3.1.1: 5 (not authorised) or 4 (bad user name or password); 5: 0x87 or 0x86.
      const refused = protocolVersion === 4 ? [4, 5] : [0x86, NOT_AUTHORIZED];
      for (const [what, code] of Object.entries({ anonymous, wrong, unknown }))
        assert.ok(refused.includes(code), `MQTT ${protocolVersion}, ${what}: CONNACK ${code}`);
    }
    assert.equal(await loginCode(broker.url, { username: 'dev-a', password: passwords['dev-a']! }), 0);
  });

  test("a device's own readings arrive; under another device's id nothing gets through", async () => {
    const v5 = await connectOnce(broker.url, {
      protocolVersion: 5,
      username: 'dev-a',
      password: passwords['dev-a']!,
    });
    const v311 = await connectOnce(broker.url, {
      protocolVersion: 4,
      username: 'dev-a',
      password: passwords['dev-a']!,
    });
    try {
      await v5.publishAsync('bsu/dev-a/telemetry', telemetryJson(1), { qos: 1 });
      // MQTT 5 tells the device: PUBACK with reason code 0x87.
      await assert.rejects(v5.publishAsync('bsu/dev-b/telemetry', telemetryJson(1), { qos: 1 }), (err) => {
        assert.equal((err as { code?: number }).code, NOT_AUTHORIZED);
        return true;
      });
      // MQTT 3.1.1 has no way to say no: mosquitto acknowledges and drops it.
      await v311.publishAsync('bsu/dev-b/telemetry', telemetryJson(2), { qos: 1 });
      await v311.publishAsync('bsu/dev-b/status', '{"ts":1,"seq":1}', { qos: 1 });
      // Published after the spoofs on the same connection: once it is stored, they would have been.
      await v311.publishAsync('bsu/dev-a/telemetry', telemetryJson(2), { qos: 1 });
      await waitFor(
        "dev-a's two readings in the site stream",
        async () => (await storedSubjects()).filter((s) => s === `bsu.${SITE}.dev-a.telemetry`).length === 2,
      );
      const subjects = await storedSubjects();
      assert.deepEqual(
        subjects.filter((s) => !s.startsWith(`bsu.${SITE}.dev-a.`)),
        [],
        'nothing but dev-a',
      );
    } finally {
      await v5.endAsync();
      await v311.endAsync();
    }
  });

  test("only the bridge's user reads: a device subscribed to bsu/# and # receives nothing", async () => {
    const seen: string[] = [];
    const spies = await Promise.all(
      ([4, 5] as const).map(async (protocolVersion) => {
        const spy = await connectOnce(broker.url, {
          protocolVersion,
          username: 'dev-b',
          password: passwords['dev-b']!,
        });
        spy.on('message', (topic) => seen.push(topic));
        await spy.subscribeAsync(['bsu/#', '#', 'bsu/dev-a/telemetry'], { qos: 1 });
        return spy;
      }),
    );
    const device = await connectOnce(broker.url, { username: 'dev-a', password: passwords['dev-a']! });
    try {
      const before = (await storedSubjects()).length;
      for (let seq = 10; seq < 15; seq++)
        await device.publishAsync('bsu/dev-a/telemetry', telemetryJson(seq), { qos: 1 });
      // The bridge's user got them all (they are stored); the devices' subscriptions got none.
      await waitFor('the 5 readings stored', async () => (await storedSubjects()).length === before + 5);
      assert.deepEqual(seen, []);
    } finally {
      await device.endAsync();
      await Promise.all(spies.map((s) => s.endAsync()));
    }
  });
});

describe('switchyard stack: broker users on a running stack', () => {
  let dir: string;
  let stack: Stack;
  /** What the processes of the stack run printed (add-device prints a password on purpose). */
  const outputs: (() => string)[] = [];
  let bridge: BridgeProcess | undefined;

  before(async () => {
    dir = mkdtempSync(join(tmpdir(), 'switchyard-site-broker-stack-'));
    stack = await stackUp({ dir, sites: 1 });
  });

  after(async () => {
    await bridge?.stop();
    await stackDown(dir);
    rmSync(dir, { recursive: true, force: true });
  });

  /** `stack <verb> …` as its own process; returns its exit code and stdout's last line. */
  async function stackCli(...args: string[]): Promise<{ code: number | string; last: string }> {
    const run = await runSwitchyard(['stack', ...args, '--dir', dir]);
    return { code: run.code, last: run.stdout.trim().split('\n').at(-1) ?? '' };
  }

  test('add-device enrols live and prints a password that connects; again: the same; --rotate: a new one', async () => {
    const { url } = stack.mqtt(SITE);
    const brokerPid = stack.mqtt(SITE).pid;
    assert.equal(await loginCode(url, { protocolVersion: 5 }), NOT_AUTHORIZED, 'anonymous is refused');

    const added = await stackCli('add-device', SITE, 'dev-live');
    assert.equal(added.code, 0);
    const password = added.last;
    assert.match(password, /^[A-Za-z0-9_-]{20,}$/);
    const device = await connectOnce(url, { protocolVersion: 5, username: 'dev-live', password });
    await device.publishAsync('bsu/dev-live/telemetry', telemetryJson(1), { qos: 1 });
    await assert.rejects(device.publishAsync('bsu/dev-other/telemetry', telemetryJson(1), { qos: 1 }));

    const again = await stackCli('add-device', SITE, 'dev-live');
    assert.deepEqual(again, { code: 0, last: password }, 'idempotent: the same password');
    assert.ok(device.connected, 'enrolling again leaves the device connected');

    const closed = new Promise<void>((resolve) => device.once('close', () => resolve()));
    const rotated = await stackCli('add-device', SITE, 'dev-live', '--rotate');
    assert.equal(rotated.code, 0);
    assert.notEqual(rotated.last, password);
    await closed; // the broker closed the connection that logged in with the old password
    assert.notEqual(await loginCode(url, { username: 'dev-live', password }), 0, 'old password refused');
    assert.equal(await loginCode(url, { username: 'dev-live', password: rotated.last }), 0);

    const removed = await stackCli('remove-device', SITE, 'dev-live');
    assert.equal(removed.code, 0);
    assert.notEqual(await loginCode(url, { username: 'dev-live', password: rotated.last }), 0);
    assert.equal(readStackBrokerPid(), brokerPid, 'the broker was never restarted');

    assert.equal((await stackCli('add-device', SITE, 'no/slashes')).code, 2);
    assert.equal((await stackCli('add-device', SITE, BRIDGE_MQTT_USERNAME)).code, 2);
    assert.equal((await stackCli('add-device', 'site-9', 'dev-x')).code, 2);
  });

  function readStackBrokerPid(): number {
    const file = JSON.parse(readFileSync(join(dir, 'stack.json'), 'utf8')) as {
      servers: { name: string; pid: number }[];
    };
    return file.servers.find((s) => s.name === `mqtt-${SITE}`)!.pid;
  }

  test('a stack run with enrolled devices leaks no password into its logs or ps', async () => {
    const broker = stack.mqtt(SITE);
    const { devicesFile } = await addDevices(dir, SITE, ['bsu-0001', 'bsu-0002', 'bsu-0003']);
    assert.equal(devicesFile, devicesFileOf(broker));
    assert.equal(statSync(devicesFile).mode & 0o777, 0o600);
    for (const file of readdirSync(brokerDir(broker)))
      if (/passw|devices\.json|acl/.test(file))
        assert.equal(statSync(join(brokerDir(broker), file)).mode & 0o777, 0o600, file);

    bridge = await startBridge({
      site: SITE,
      mqttUrl: broker.url,
      natsUrl: stack.siteNats(SITE).url,
      env: { ...stack.siteEnv(SITE), SWITCHYARD_LOG_LEVEL: 'debug' },
    });
    outputs.push(() => bridge!.output());
    const simulator = startSwitchyard([
      'simulate',
      '--mqtt',
      broker.url,
      '--devices',
      '3',
      '--rate',
      '100',
      '--count',
      '150',
      '--devices-file',
      devicesFile,
    ]);
    outputs.push(() => simulator.output());
    // What `ps` shows of every process while the devices publish.
    const psSnapshots: string[] = [];
    while (simulator.child.exitCode === null) {
      psSnapshots.push(execFileSync('ps', ['-eo', 'pid,args', '--no-headers'], { encoding: 'utf8' }));
      await new Promise((resolve) => setTimeout(resolve, 200));
    }
    assert.equal(await simulator.exited, 0, simulator.output());
    assert.match(simulator.output(), /sent 150 messages from 3 devices/);
    await waitFor(
      'the bridge to store the 150 messages',
      async () => (await counterTotal(bridge!.opsUrl, 'switchyard_edge_published_total')) >= 150,
    );

    const secrets = {
      bridge: bridgeMqttUser(broker).password,
      ...JSON.parse(readFileSync(devicesFile, 'utf8')).devices,
    } as Record<string, string>;
    assert.ok(Object.values(secrets).every((s) => s.length >= 20));
    const logs = listFiles(dir).filter((f) => f.endsWith('.log'));
    assert.ok(logs.some((f) => f.endsWith('mosquitto.log')));
    const texts: [string, string][] = [
      ...logs.map((f): [string, string] => [f, readFileSync(f, 'utf8')]),
      ...outputs.map((o, i): [string, string] => [`output of command ${i}`, o()]),
      ...psSnapshots.map((p, i): [string, string] => [`ps snapshot ${i}`, p]),
    ];
    for (const [where, text] of texts)
      for (const [whose, secret] of Object.entries(secrets))
        assert.ok(!text.includes(secret), `${whose}'s password in ${where}`);
  });
});

/** Every file under `dir`, recursively. */
function listFiles(dir: string): string[] {
  return readdirSync(dir, { withFileTypes: true }).flatMap((e) =>
    e.isDirectory() ? listFiles(join(dir, e.name)) : [join(dir, e.name)],
  );
}
