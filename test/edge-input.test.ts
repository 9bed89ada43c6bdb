/**
 * What the bridge does with bad input and with a full disk budget, against a real mosquitto and a
 * real site nats-server.
 */
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { jetstreamManager } from '@nats-io/jetstream';
import type { NatsConnection } from '@nats-io/transport-node';
import { Header } from '../schemas/index.ts';
import { siteStreamNames } from '../schemas/streams.ts';
import { DevicePublisher, startBridge, telemetryJson, type BridgeProcess } from './support/edge.ts';
import { natsConnect, readStream, streamCount } from './support/jetstream.ts';
import { metricValue } from './support/process.ts';
import { TestServers, waitFor } from './support/servers.ts';

const SITE = 'site-in';
const names = siteStreamNames(SITE);

describe('bridge input handling', () => {
  const servers = new TestServers('edge-input');
  let site: NatsConnection;
  let bridge: BridgeProcess;
  let devices: DevicePublisher;

  before(async () => {
    const nats = await servers.nats({ domain: SITE });
    const mqttUrl = (await servers.mosquitto()).url;
    site = await natsConnect(nats.url);
    bridge = await startBridge({
      site: SITE,
      mqttUrl,
      natsUrl: nats.url,
      env: {
        SWITCHYARD_MAX_PAYLOAD_BYTES: '4096',
        SWITCHYARD_TELEMETRY_MAX_BYTES: String(1024 * 1024),
        SWITCHYARD_EVENTS_MAX_BYTES: String(1024 * 1024),
        SWITCHYARD_INVALID_MAX_BYTES: String(1024 * 1024),
      },
    });
    devices = await DevicePublisher.connect(mqttUrl);
  });

  after(async () => {
    await devices?.close();
    await bridge?.stop();
    await site?.close();
    await servers.stopAll();
  });

  test('keeps every kind of bad input as invalid, byte for byte, with its reason, and goes on', async () => {
    const future = Date.now() + 24 * 3600_000;
    const cases: { topic: string; payload: Buffer; subject: string; reason: RegExp; label: string }[] = [
      {
        topic: 'bsu/bad-1/telemetry',
        payload: Buffer.from('{"ts": 1, "seq": '),
        subject: 'bad-1',
        reason: /^malformed JSON/,
        label: 'malformed_json',
      },
      {
        topic: 'bsu/bad-2/telemetry',
        payload: Buffer.from(JSON.stringify({ ts: Date.now(), seq: 1, SoC: '87%', V: 800, A: 1, W: 800 })),
        subject: 'bad-2',
        reason: /telemetry\.SoC: expected number, got "87%"/,
        label: 'schema',
      },
      {
        // A schema failure whose reason quotes the value "UTF-8" is still a schema failure.
        topic: 'bsu/bad-2b/telemetry',
        payload: Buffer.from(JSON.stringify({ ts: Date.now(), seq: 1, SoC: 'UTF-8', V: 800, A: 1, W: 800 })),
        subject: 'bad-2b',
        reason: /telemetry\.SoC: expected number, got "UTF-8"/,
        label: 'schema',
      },
      {
        topic: 'bsu/bad-3/status',
        payload: Buffer.from(JSON.stringify({ ts: Date.now(), seq: 1, ChaSt: 'OFF' })),
        subject: 'bad-3',
        reason: /status\.State: required/,
        label: 'schema',
      },
      {
        topic: 'bsu/bad-4/gossip',
        payload: Buffer.from('{}'),
        subject: 'bad-4',
        reason: /^unknown kind "gossip"/,
        label: 'unknown_kind',
      },
      {
        topic: 'bsu/bad-5/telemetry',
        payload: Buffer.from([0x7b, 0xff, 0xfe, 0x7d]),
        subject: 'bad-5',
        reason: /UTF-8/,
        label: 'not_utf8',
      },
      {
        topic: 'bsu/bad-6/telemetry',
        payload: Buffer.from(JSON.stringify({ pad: 'x'.repeat(5000) })),
        subject: 'bad-6',
        reason: /over the 4096-byte limit/,
        label: 'too_large',
      },
      {
        topic: 'bsu/bad-7/telemetry',
        payload: Buffer.from(telemetryJson(1, future)),
        subject: 'bad-7',
        reason: /device clock is \d+ s ahead/,
        label: 'clock_skew',
      },
      {
        topic: 'bsu/bad.8/telemetry',
        payload: Buffer.from(telemetryJson(1)),
        subject: '_unknown',
        reason: /device id "bad.8"/,
        label: 'bad_device_id',
      },
    ];
    const beforeTelemetry = await streamCount(site, names.telemetry);
    const beforeInvalid = await streamCount(site, names.invalid);
    let goodSeq = 0;
    for (const c of cases) {
      await devices.publish('bsu/good-1/telemetry', telemetryJson(++goodSeq));
      await devices.publish(c.topic, c.payload);
    }
    await devices.publish('bsu/good-1/telemetry', telemetryJson(++goodSeq));
    await waitFor(
      `${goodSeq} readings and ${cases.length} invalid messages in the site streams`,
      async () =>
        (await streamCount(site, names.telemetry)) >= beforeTelemetry + goodSeq &&
        (await streamCount(site, names.invalid)) >= beforeInvalid + cases.length,
    );

    const stored = await readStream(site, names.telemetry);
    const invalid = await readStream(site, names.invalid);
    assert.equal(invalid.length, cases.length);
    assert.ok(
      stored.every((m) => !m.subject.endsWith('.invalid')),
      'nothing invalid in the telemetry stream',
    );
    for (const c of cases) {
      const m = invalid.find((x) => x.headers[Header.mqttTopic] === c.topic);
      assert.ok(m, `no invalid message kept for ${c.topic}`);
      assert.equal(m.subject, `bsu.${SITE}.${c.subject}.invalid`);
      assert.match(m.headers[Header.invalidReason]!, c.reason);
      // Kept as sent up to the size limit; larger ones truncated, with their size and sha256.
      assert.deepEqual(
        Buffer.from(m.payload),
        c.payload.subarray(0, 4096),
        `${c.topic}: bytes must be kept as sent`,
      );
      assert.equal(m.headers[Header.originalSize], String(c.payload.length));
    }
    const good = stored.filter((m) => m.subject === `bsu.${SITE}.good-1.telemetry`);
    assert.deepEqual(
      good.map((m) => (JSON.parse(Buffer.from(m.payload).toString()) as { seq: number }).seq),
      Array.from({ length: goodSeq }, (_, i) => i + 1),
    );
    for (const label of new Set(cases.map((c) => c.label))) {
      const want = cases.filter((c) => c.label === label).length;
      assert.equal(
        await metricValue(
          bridge.opsUrl,
          `switchyard_edge_invalid_total{reason="${label}",service="switchyard-edge"}`,
        ),
        want,
        label,
      );
    }
    assert.equal(bridge.child.exitCode, null, 'the bridge is still running');
  });

  test('when the disk budget is exhausted, the oldest telemetry goes and alarms stay', async () => {
    const jsm = await jetstreamManager(site);
    const alarms = 40;
    for (let i = 1; i <= alarms; i++) {
      const payload = JSON.stringify({
        ts: Date.now(),
        seq: i,
        alarm: 'OVER_TEMP_ALARM',
        action: i % 2 ? 'raised' : 'cleared',
      });
      await devices.publish('bsu/flood-1/event', payload);
    }
    // About 3 MiB of telemetry into a 1 MiB budget.
    const batch: Promise<void>[] = [];
    for (let seq = 1; seq <= 6000; seq++)
      batch.push(devices.publish('bsu/flood-1/telemetry', telemetryJson(seq)));
    await Promise.all(batch);
    const newestSeq = async (): Promise<number> => {
      const last = await jsm.streams.getMessage(names.telemetry, {
        last_by_subj: `bsu.${SITE}.flood-1.telemetry`,
      });
      return (last?.json() as { seq: number } | undefined)?.seq ?? 0;
    };
    await waitFor('the newest reading stored', async () => (await newestSeq()) === 6000, 60_000);

    const telemetry = await jsm.streams.info(names.telemetry);
    assert.ok(telemetry.state.first_seq > 1, 'the oldest telemetry was evicted');
    assert.ok(telemetry.state.bytes <= 1024 * 1024, `telemetry stream holds ${telemetry.state.bytes} bytes`);

    const events = await readStream(site, names.events, { filter: `bsu.${SITE}.flood-1.event` });
    assert.equal(events.length, alarms, 'every alarm outlives the flood');
    assert.equal((await jsm.streams.info(names.events)).state.first_seq, 1, 'nothing evicted from events');

    const sample = `switchyard_edge_stream_evicted_messages{stream="${names.telemetry}",service="switchyard-edge"}`;
    // The flood is over, so the stream is stable: the metric must catch up with it exactly.
    const evicted = (await jsm.streams.info(names.telemetry)).state.first_seq - 1;
    await waitFor(
      `the eviction metric to read ${evicted}`,
      async () => (await metricValue(bridge.opsUrl, sample)) === evicted,
      10_000,
    );
  });
});
