/**
 * No message stalls a site: oversized, malformed and refused payloads are kept as invalid (truncated,
 * with size and sha256) in the site's invalid stream while valid readings keep flowing, a flood of
 * them evicts only invalid messages, and budgets that cannot fit the server fail the start at once.
 */
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { jetstreamManager, type JetStreamManager } from '@nats-io/jetstream';
import type { NatsConnection } from '@nats-io/transport-node';
import { freePort } from '../lib/process.ts';
import { Header } from '../schemas/index.ts';
import { siteStreamNames } from '../schemas/streams.ts';
import {
  brokerDir,
  MQTT_MAX_PACKET_BYTES,
  MQTT_MAX_QUEUED_BYTES,
  mosquittoSpec,
} from '../stack/mosquitto.ts';
import { DevicePublisher, startBridge, telemetryJson, type BridgeProcess } from './support/edge.ts';
import { natsConnect, readStream, streamCount } from './support/jetstream.ts';
import { metricValue, startSwitchyard } from './support/process.ts';
import { TestServers, waitFor } from './support/servers.ts';

const SITE = 'site-poison';
const names = siteStreamNames(SITE);
const LIMIT = 65536;
const MiB = 1024 * 1024;
const sha256 = (b: Buffer): string => createHash('sha256').update(b).digest('hex');

/** A valid telemetry payload padded with spaces to exactly `bytes`. */
const paddedTelemetry = (seq: number, bytes: number): Buffer => {
  const json = telemetryJson(seq);
  return Buffer.from(json + ' '.repeat(bytes - Buffer.byteLength(json)));
};

/** A broker without a packet limit: the bridge itself must cope with what a laxer broker lets in. */
const laxBroker = async (servers: TestServers) =>
  servers.start(
    mosquittoSpec({
      name: 'mqtt',
      dir: join(servers.dir, 'mqtt'),
      port: await freePort(),
      auth: false,
      maxPacketBytes: 0,
    }),
  );

describe('poison messages and site budgets', () => {
  const servers = new TestServers('edge-poison');
  let site: NatsConnection;
  let jsm: JetStreamManager;
  let bridge: BridgeProcess;
  let devices: DevicePublisher;

  before(async () => {
    const nats = await servers.nats({ domain: SITE });
    const mqtt = await laxBroker(servers);
    site = await natsConnect(nats.url);
    jsm = await jetstreamManager(site);
    // A site of an older release: its telemetry stream also captured `.invalid`.
    await jsm.streams.add({
      name: names.telemetry,
      subjects: [`bsu.${SITE}.*.telemetry`, `bsu.${SITE}.*.invalid`],
      max_bytes: 8 * MiB,
    });
    await site.request(`bsu.${SITE}.old-1.invalid`, Buffer.from('old evidence'));
    bridge = await startBridge({
      site: SITE,
      mqttUrl: mqtt.url,
      natsUrl: nats.url,
      env: {
        SWITCHYARD_TELEMETRY_MAX_BYTES: String(8 * MiB),
        SWITCHYARD_EVENTS_MAX_BYTES: String(4 * MiB),
        SWITCHYARD_INVALID_MAX_BYTES: String(2 * MiB),
      },
    });
    devices = await DevicePublisher.connect(mqtt.url);
  });

  after(async () => {
    await devices?.close();
    await bridge?.stop();
    await site?.close();
    await servers.stopAll();
  });

  test('an existing site is migrated: invalid gets its own stream, nothing stored is lost', async () => {
    const telemetry = await jsm.streams.info(names.telemetry);
    assert.deepEqual(telemetry.config.subjects, [`bsu.${SITE}.*.telemetry`]);
    assert.equal(telemetry.state.messages, 1, 'the old invalid message is still stored');
    assert.deepEqual((await jsm.streams.info(names.invalid)).config.subjects, [`bsu.${SITE}.*.invalid`]);
  });

  test('oversized and invalid payloads go to the invalid stream, truncated; every valid one is stored', async () => {
    const oversized = [
      { topic: 'bsu/big-1/telemetry', payload: Buffer.alloc(2_000_000, 0x61) },
      { topic: 'bsu/big-2/telemetry', payload: paddedTelemetry(1, LIMIT + 1) },
    ];
    const exact = paddedTelemetry(1, LIMIT);
    const garbage = Array.from({ length: 50 }, (_, i) => ({
      topic: 'bsu/broken-1/telemetry',
      payload: Buffer.from(`{"seq": ${i}, broken`),
    }));
    const beforeInvalid = await streamCount(site, names.invalid);
    const beforeTelemetry = await streamCount(site, names.telemetry);
    let goodSeq = 0;
    const goodPayloads: string[] = [];
    const sends: Promise<void>[] = [];
    for (const m of [...oversized, ...garbage]) {
      goodPayloads.push(telemetryJson(++goodSeq));
      sends.push(devices.publish('bsu/good-1/telemetry', goodPayloads.at(-1)!));
      sends.push(devices.publish(m.topic, m.payload));
    }
    sends.push(devices.publish('bsu/exact-1/telemetry', exact));
    await Promise.all(sends);
    const invalidCount = oversized.length + garbage.length;
    await waitFor('every message stored', async () => {
      const [inv, tel] = [await streamCount(site, names.invalid), await streamCount(site, names.telemetry)];
      return inv === beforeInvalid + invalidCount && tel === beforeTelemetry + goodSeq + 1;
    });

    const good = await readStream(site, names.telemetry, { filter: `bsu.${SITE}.good-1.telemetry` });
    assert.deepEqual(
      good.map((m) => Buffer.from(m.payload).toString()),
      goodPayloads,
      'every valid reading stored once, in order, byte for byte',
    );
    const [exactStored] = await readStream(site, names.telemetry, {
      filter: `bsu.${SITE}.exact-1.telemetry`,
    });
    assert.ok(exactStored, 'a payload of exactly the limit is valid');
    assert.deepEqual(Buffer.from(exactStored.payload), exact);

    const invalid = await readStream(site, names.invalid);
    for (const m of [...oversized, garbage[0]!, garbage.at(-1)!]) {
      const kept = invalid.find(
        (x) =>
          x.headers[Header.mqttTopic] === m.topic && x.headers[Header.payloadSha256] === sha256(m.payload),
      );
      assert.ok(kept, `${m.topic} (${m.payload.length} bytes) kept as invalid`);
      assert.equal(kept.headers[Header.originalSize], String(m.payload.length));
      assert.ok(kept.headers[Header.invalidReason]);
      assert.deepEqual(Buffer.from(kept.payload), m.payload.subarray(0, LIMIT), 'truncated to the limit');
    }
    assert.equal(invalid.filter((x) => x.headers[Header.mqttTopic] === 'bsu/broken-1/telemetry').length, 50);
    assert.ok((await fetch(`${bridge.opsUrl}/readyz`)).ok, 'the bridge stays ready');
  });

  test('a permanent refusal by the server is kept as invalid, not retried forever', async () => {
    const telemetry = await jsm.streams.info(names.telemetry);
    await jsm.streams.update(names.telemetry, { ...telemetry.config, max_msg_size: 256 });
    const refused = Buffer.from(telemetryJson(1));
    try {
      await devices.publish('bsu/refused-1/telemetry', refused);
      await waitFor('the refused reading kept as invalid', async () =>
        (await readStream(site, names.invalid)).some(
          (m) => m.headers[Header.mqttTopic] === 'bsu/refused-1/telemetry',
        ),
      );
    } finally {
      await jsm.streams.update(names.telemetry, { ...telemetry.config, max_msg_size: -1 });
    }
    const kept = (await readStream(site, names.invalid)).find(
      (m) => m.headers[Header.mqttTopic] === 'bsu/refused-1/telemetry',
    )!;
    assert.match(kept.headers[Header.invalidReason]!, /^refused by the site server/);
    assert.equal(kept.headers[Header.payloadSha256], sha256(refused));
    assert.deepEqual(Buffer.from(kept.payload), refused);
    assert.equal(
      await metricValue(
        bridge.opsUrl,
        'switchyard_edge_invalid_total{reason="refused",service="switchyard-edge"}',
      ),
      1,
    );
    // The site goes on: a reading after it is stored as telemetry.
    await devices.publish('bsu/refused-1/telemetry', telemetryJson(2));
    await waitFor(
      'the next reading stored',
      async () =>
        (await readStream(site, names.telemetry, { filter: `bsu.${SITE}.refused-1.telemetry` })).length === 1,
    );
    assert.ok((await fetch(`${bridge.opsUrl}/readyz`)).ok, 'the bridge stays ready');
  });

  test('an invalid flood beyond its budget evicts only invalid messages', async () => {
    for (let i = 1; i <= 20; i++)
      await devices.publish(
        'bsu/alarm-1/event',
        JSON.stringify({ ts: Date.now(), seq: i, alarm: 'OVER_TEMP_ALARM', action: 'raised' }),
      );
    await waitFor('alarms stored', async () => (await streamCount(site, names.events)) === 20);
    const telemetryBefore = await jsm.streams.info(names.telemetry);
    const eventsBefore = await jsm.streams.info(names.events);
    // About 6 MiB of garbage into a 2 MiB budget.
    const flood: Promise<void>[] = [];
    for (let i = 0; i < 100; i++)
      flood.push(devices.publish('bsu/flood-1/telemetry', Buffer.alloc(60_000, 48 + (i % 10)).fill(i, 0, 1)));
    await Promise.all(flood);
    await waitFor('the last of the flood stored', async () => {
      const last = await jsm.streams
        .getMessage(names.invalid, { last_by_subj: `bsu.${SITE}.flood-1.invalid` })
        .catch(() => null);
      return last?.data[0] === 99;
    });
    const invalid = await jsm.streams.info(names.invalid);
    assert.ok(invalid.state.first_seq > 1, 'the oldest invalid messages were evicted');
    assert.ok(invalid.state.bytes <= 2 * MiB);
    const telemetryAfter = await jsm.streams.info(names.telemetry);
    const eventsAfter = await jsm.streams.info(names.events);
    assert.equal(telemetryAfter.state.messages, telemetryBefore.state.messages, 'telemetry untouched');
    assert.equal(telemetryAfter.state.first_seq, telemetryBefore.state.first_seq);
    assert.equal(eventsAfter.state.messages, eventsBefore.state.messages, 'alarms untouched');
    assert.equal(eventsAfter.state.first_seq, 1);
  });

  test('budgets larger than the file store fail the start within 10 s, with the numbers', async () => {
    const small = await servers.nats({ domain: 'site-small', maxFileStoreBytes: 1024 ** 3 });
    const startedMs = Date.now();
    const p = startSwitchyard(['edge'], {
      SWITCHYARD_SITE: 'site-small',
      SWITCHYARD_NATS_URL: small.url,
      SWITCHYARD_MQTT_URL: `mqtt://127.0.0.1:${await freePort()}`,
      SWITCHYARD_OPS_PORT: String(await freePort()),
    });
    const timer = setTimeout(() => void p.stop('SIGKILL'), 10_000);
    const code = await p.exited;
    clearTimeout(timer);
    assert.ok(Date.now() - startedMs < 10_000, `exited after ${Date.now() - startedMs} ms`);
    assert.notEqual(code, 0);
    assert.ok(typeof code === 'number', `exited on its own (not ${code}): ${p.output()}`);
    assert.match(
      p.output(),
      /stream budgets 9\.5 GiB exceed the site server's max_file_store 1 GiB: lower SWITCHYARD_TELEMETRY_MAX_BYTES/,
    );
    const smallNc = await natsConnect(small.url);
    try {
      assert.equal(
        (await jetstreamManager(smallNc).then((m) => m.getAccountInfo())).streams,
        0,
        'nothing created',
      );
    } finally {
      await smallNc.close();
    }
  });
});

describe('a size limit above the server max_payload', () => {
  const servers = new TestServers('edge-poison-big');
  const SITE_BIG = 'site-big';
  const big = siteStreamNames(SITE_BIG);

  test('a valid reading larger than max_payload is kept as invalid, truncated to fit', async () => {
    const nats = await servers.nats({ domain: SITE_BIG });
    const mqtt = await laxBroker(servers);
    const bridge = await startBridge({
      site: SITE_BIG,
      mqttUrl: mqtt.url,
      natsUrl: nats.url,
      env: { SWITCHYARD_MAX_PAYLOAD_BYTES: String(4 * MiB), SWITCHYARD_INVALID_MAX_BYTES: String(16 * MiB) },
    });
    const devices = await DevicePublisher.connect(mqtt.url);
    const site = await natsConnect(nats.url);
    try {
      const huge = paddedTelemetry(1, 1_500_000);
      await devices.publish('bsu/huge-1/telemetry', huge);
      const next = telemetryJson(2);
      await devices.publish('bsu/huge-1/telemetry', next);
      await waitFor('the next reading stored', async () => (await streamCount(site, big.telemetry)) === 1);
      const [kept] = await readStream(site, big.invalid);
      assert.ok(kept, 'the refused reading is kept as invalid');
      assert.match(kept.headers[Header.invalidReason]!, /^refused by the site server: .*max_payload/);
      assert.equal(kept.headers[Header.originalSize], String(huge.length));
      assert.equal(kept.headers[Header.payloadSha256], sha256(huge));
      assert.deepEqual(Buffer.from(kept.payload), huge.subarray(0, 1024 * 1024 - 4096));
      const [stored] = await readStream(site, big.telemetry);
      assert.equal(Buffer.from(stored!.payload).toString(), next);
      assert.ok((await fetch(`${bridge.opsUrl}/readyz`)).ok, 'the bridge stays ready');
    } finally {
      await devices.close();
      await bridge.stop();
      await site.close();
      await servers.stopAll();
    }
  });
});

describe("the stack's broker", () => {
  const servers = new TestServers('edge-poison-broker');

  test('refuses a packet over max_packet_size, so it never reaches the bridge', async () => {
    const broker = await servers.mosquitto();
    const conf = readFileSync(join(brokerDir(broker), 'mosquitto.conf'), 'utf8');
    assert.match(conf, new RegExp(`^max_packet_size ${MQTT_MAX_PACKET_BYTES}$`, 'm'));
    assert.match(conf, new RegExp(`^max_queued_bytes ${MQTT_MAX_QUEUED_BYTES}$`, 'm'));
    assert.match(conf, /^max_queued_messages 1000000$/m);
    const devices = await DevicePublisher.connect(broker.url);
    devices.client.options.reconnectPeriod = 0;
    try {
      // A PUBLISH of the payload alone plus topic and header is over the limit.
      void devices
        .publish('bsu/big-1/telemetry', Buffer.alloc(MQTT_MAX_PACKET_BYTES, 0x61))
        .catch(() => undefined);
      await waitFor('the broker to drop the device', () => !devices.client.connected, 10_000);
      assert.equal(devices.acked, 0, 'the broker never took it');
    } finally {
      await devices.client.endAsync(true);
      await servers.stopAll();
    }
  });
});
