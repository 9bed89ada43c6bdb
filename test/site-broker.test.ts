/**
 * The site broker's authentication and ACL, with a real mosquitto and a real bridge: nobody
 * anonymous, a device publishes only under its own id, only the bridge's user reads; on a real
 * stack, `stack add-device` works live and no password of a stack run reaches a log or `ps`; and
 * the gateway's broker as install.sh sets it up (plain and TLS), its devices managed with
 * deploy/systemd/switchyard-device.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync, spawnSync } from 'node:child_process';
import {
  cpSync,
  mkdirSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  rmSync,
  statSync,
  writeFileSync,
} from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { jetstreamManager } from '@nats-io/jetstream';
import type { NatsConnection } from '@nats-io/transport-node';
import mqtt, { type IClientOptions, type MqttClient } from 'mqtt';
import { siteStreamNames } from '../schemas/streams.ts';
import {
  ACL_TEXT,
  BRIDGE_MQTT_USERNAME,
  brokerDir,
  bridgeMqttUser,
  devicesFileOf,
  enrolDevices,
} from '../stack/mosquitto.ts';
import { freePort } from '../lib/process.ts';
import type { RunningServer } from '../stack/server-process.ts';
import { findBinary, ServerRole } from '../stack/server-specs.ts';
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

const SYSTEMD = fileURLToPath(new URL('../deploy/systemd/', import.meta.url));

/** The rules of an ACL file: its lines without comments and blank lines. */
const aclRules = (text: string): string[] =>
  text
    .split('\n')
    .map((l) => l.trim())
    .filter((l) => l !== '' && !l.startsWith('#'));

describe("the gateway's broker, as install.sh sets it up", () => {
  const servers = new TestServers('gateway-broker');
  after(() => servers.stopAll());

  test('its ACL is the one the stack runs', () => {
    assert.deepEqual(
      aclRules(readFileSync(join(SYSTEMD, 'mosquitto-switchyard.acl'), 'utf8')),
      aclRules(ACL_TEXT),
    );
  });

  /**
   * Runs install.sh into a fresh root (`extra` flags added), then starts mosquitto on what it wrote,
   * moved to free ports and the root's paths. Returns the broker, its ports and the root.
   */
  async function installedBroker(name: string, extra: string[]) {
    const root = join(servers.dir, name);
    const release = join(servers.dir, `${name}-release`);
    mkdirSync(join(release, 'dist/cli'), { recursive: true });
    writeFileSync(join(release, 'dist/cli/main.js'), '// stand-in build\n');
    cpSync(fileURLToPath(new URL('../package.json', import.meta.url)), join(release, 'package.json'));
    writeFileSync(join(release, 'package-lock.json'), '{}\n');
    mkdirSync(join(release, 'node_modules'));
    writeFileSync(join(release, '.switchyard-release'), 'test\n');
    mkdirSync(root);
    const args = ['--prefix', root, '--release', release, '--site', 'site-7', '--no-nats', ...extra];
    const run = spawnSync('bash', [join(SYSTEMD, 'install.sh'), ...args], { encoding: 'utf8' });
    assert.equal(run.status, 0, run.stderr);
    const again = spawnSync('bash', [join(SYSTEMD, 'install.sh'), ...args], { encoding: 'utf8' });
    assert.equal(again.stdout.trim().split('\n').at(-1), 'install.sh: done: 0 changes', again.stdout);

    const [plainPort, tlsPort] = [await freePort(), await freePort()];
    const conf = readFileSync(join(root, 'etc/mosquitto/conf.d/switchyard.conf'), 'utf8')
      .replaceAll('/etc/mosquitto/switchyard/', `${root}/etc/mosquitto/switchyard/`)
      .replace(/^listener 1883/m, `listener ${plainPort}`)
      .replace(/^listener 8883/m, `listener ${tlsPort}`);
    // Debian's mosquitto.conf around it, with this test's paths; root stays root.
    const confd = join(servers.dir, `${name}-conf.d`);
    mkdirSync(confd);
    writeFileSync(join(confd, 'switchyard.conf'), conf);
    const main = join(servers.dir, `${name}-mosquitto.conf`);
    writeFileSync(main, `user root\npersistence false\nlog_dest stdout\ninclude_dir ${confd}\n`);
    const broker = await servers.start({
      name: `mosquitto-${name}`,
      role: ServerRole.siteMqtt,
      command: findBinary('mosquitto'),
      args: ['-c', main],
      url: `mqtt://127.0.0.1:${plainPort}`,
      dataDir: servers.dir,
      logFile: join(servers.dir, `${name}-mosquitto.log`),
    });
    /** `switchyard-device ARGS` on this root's password file; the broker is reloaded by the test. */
    const deviceTool = (...toolArgs: string[]) => {
      const r = spawnSync(
        join(root, 'usr/local/sbin/switchyard-device'),
        ['--passwd', join(root, 'etc/mosquitto/switchyard/passwd'), '--no-reload', ...toolArgs],
        { encoding: 'utf8' },
      );
      return { code: r.status, last: r.stdout.trim().split('\n').at(-1) ?? '', stderr: r.stderr };
    };
    const reload = () => process.kill(broker.pid, 'SIGHUP');
    return { root, broker, conf, plainPort, tlsPort, deviceTool, reload };
  }

  test('refuses anonymous clients, takes the bridge from its credentials file and devices from switchyard-device', async (t) => {
    if (process.getuid?.() !== 0) return t.skip('install.sh needs root');
    const { root, broker, conf, deviceTool, reload } = await installedBroker('plain', []);
    assert.match(conf, /^listener \d+$/m, 'one plain listener on every address');
    assert.doesNotMatch(conf, /certfile/);
    const credentials = join(root, 'etc/switchyard/credentials');
    assert.equal(statSync(credentials).mode & 0o777, 0o700);
    assert.equal(statSync(join(credentials, 'mqtt-password')).mode & 0o777, 0o600);
    assert.equal(statSync(join(root, 'etc/mosquitto/switchyard/passwd')).mode & 0o777, 0o640);
    assert.match(
      readFileSync(join(root, 'etc/switchyard/edge.env'), 'utf8'),
      /^SWITCHYARD_MQTT_USERNAME=switchyard-bridge$/m,
    );
    const bridgePassword = readFileSync(join(credentials, 'mqtt-password'), 'utf8').trim();
    assert.ok(!readFileSync(join(root, 'etc/mosquitto/switchyard/passwd'), 'utf8').includes(bridgePassword));

    assert.notEqual(await loginCode(broker.url, {}), 0, 'anonymous');
    const reader = await connectOnce(broker.url, {
      username: BRIDGE_MQTT_USERNAME,
      password: bridgePassword,
    });
    const seen: string[] = [];
    reader.on('message', (topic) => seen.push(topic));
    await reader.subscribeAsync('bsu/+/+', { qos: 1 });
    try {
      const added = deviceTool('add', 'dev-1');
      assert.equal(added.code, 0, added.stderr);
      assert.equal(deviceTool('add', 'dev-1').code, 1, 'add of an existing device');
      assert.equal(deviceTool('add', 'no/slash').code, 2);
      assert.equal(deviceTool('add', BRIDGE_MQTT_USERNAME).code, 2);
      reload();
      await waitFor(
        'dev-1 accepted',
        async () => (await loginCode(broker.url, { username: 'dev-1', password: added.last })) === 0,
      );
      assert.equal(deviceTool('list').last, 'dev-1');

      const device = await connectOnce(broker.url, {
        protocolVersion: 5,
        username: 'dev-1',
        password: added.last,
      });
      await device.publishAsync('bsu/dev-1/telemetry', telemetryJson(1), { qos: 1 });
      await assert.rejects(device.publishAsync('bsu/dev-2/telemetry', telemetryJson(1), { qos: 1 }));
      await waitFor("dev-1's reading at the bridge's user", () => seen.length === 1);
      assert.deepEqual(seen, ['bsu/dev-1/telemetry']);

      const closed = new Promise<void>((resolve) => device.once('close', () => resolve()));
      const rotated = deviceTool('rotate', 'dev-1');
      assert.equal(rotated.code, 0, rotated.stderr);
      reload();
      await closed;
      await waitFor(
        'the old password refused',
        async () => (await loginCode(broker.url, { username: 'dev-1', password: added.last })) !== 0,
      );
      assert.equal(await loginCode(broker.url, { username: 'dev-1', password: rotated.last }), 0);
      assert.ok(reader.connected, "the bridge's connection outlives the reloads");

      assert.equal(deviceTool('remove', 'dev-1').code, 0);
      reload();
      await waitFor(
        'dev-1 refused',
        async () => (await loginCode(broker.url, { username: 'dev-1', password: rotated.last })) !== 0,
      );
      assert.equal(deviceTool('remove', 'dev-1').code, 1);
    } finally {
      await reader.endAsync();
    }
  });

  test('with --mqtt-cert/--mqtt-key: devices over TLS, plain text on 127.0.0.1 only', async (t) => {
    if (process.getuid?.() !== 0) return t.skip('install.sh needs root');
    const pki = join(servers.dir, 'pki');
    mkdirSync(pki);
    const openssl = spawnSync(
      'openssl',
      [
        'req',
        '-x509',
        '-newkey',
        'rsa:2048',
        '-nodes',
        '-days',
        '1',
        '-subj',
        '/CN=gateway',
        '-addext',
        'subjectAltName=IP:127.0.0.1',
        '-keyout',
        join(pki, 'key.pem'),
        '-out',
        join(pki, 'cert.pem'),
      ],
      { encoding: 'utf8' },
    );
    assert.equal(openssl.status, 0, openssl.stderr);
    const { root, conf, tlsPort, plainPort, deviceTool, reload } = await installedBroker('tls', [
      '--mqtt-cert',
      join(pki, 'cert.pem'),
      '--mqtt-key',
      join(pki, 'key.pem'),
      '--mqtt-ca',
      join(pki, 'cert.pem'),
    ]);
    assert.match(conf, new RegExp(`^listener ${plainPort} 127\\.0\\.0\\.1$`, 'm'));
    assert.match(conf, new RegExp(`^listener ${tlsPort}$`, 'm'));
    assert.equal(statSync(join(root, 'etc/mosquitto/switchyard/server.key')).mode & 0o777, 0o640);

    const added = deviceTool('add', 'dev-tls');
    assert.equal(added.code, 0, added.stderr);
    reload();
    const tlsUrl = `mqtts://127.0.0.1:${tlsPort}`;
    const ca = readFileSync(join(root, 'etc/mosquitto/switchyard/ca.crt'));
    await waitFor(
      'dev-tls accepted over TLS',
      async () => (await loginCode(tlsUrl, { ca, username: 'dev-tls', password: added.last })) === 0,
    );
    assert.notEqual(await loginCode(tlsUrl, { ca }), 0, 'anonymous over TLS');
    // A client that does not trust the gateway's CA does not get to send its password.
    await assert.rejects(connectOnce(tlsUrl, { username: 'dev-tls', password: added.last }));
  });
});
