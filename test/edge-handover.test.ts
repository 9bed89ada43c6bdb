/**
 * A message the bridge fails to hand over, against a real mosquitto and a real site nats-server:
 * the failure is counted and logged, the broker redelivers it, later messages do not stall behind
 * it, and every message ends stored exactly once.
 */
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { jetstream, jetstreamManager } from '@nats-io/jetstream';
import type { NatsConnection } from '@nats-io/transport-node';
import { pino } from 'pino';
import { Registry } from 'prom-client';
import { Value } from 'typebox/value';
import { EdgeBridge } from '../edge/bridge.ts';
import { EdgeConfigSchema, type EdgeConfig } from '../edge/config.ts';
import { MqttSource } from '../edge/mqtt-source.ts';
import { silentLogger } from '../lib/log.ts';
import { siteStreamNames } from '../schemas/streams.ts';
import { DevicePublisher, telemetryJson } from './support/edge.ts';
import { natsConnect, readStream } from './support/jetstream.ts';
import { TestServers, waitFor } from './support/servers.ts';

const SITE = 'site-ho';
/** Small, so that a message whose PUBACK is held for good would stall the source within the test. */
const WINDOW = 8;
const seqOf = (payload: Uint8Array): number =>
  (JSON.parse(Buffer.from(payload).toString()) as { seq: number }).seq;

/** The seqs stored on `subject`, in stream order. */
async function storedSeqs(nc: NatsConnection, stream: string, subject: string): Promise<number[]> {
  return (await readStream(nc, stream, { filter: subject })).map((m) => seqOf(m.payload));
}

describe('a message the bridge fails to hand over', () => {
  const servers = new TestServers('edge-handover');
  let natsUrl: string;
  let mqttUrl: string;
  let nc: NatsConnection;
  let devices: DevicePublisher;

  before(async () => {
    natsUrl = (await servers.nats({ domain: SITE })).url;
    mqttUrl = (await servers.mosquitto()).url;
    nc = await natsConnect(natsUrl);
    devices = await DevicePublisher.connect(mqttUrl);
  });

  after(async () => {
    await devices?.close();
    await nc?.close();
    await servers.stopAll();
  });

  test('is redelivered, logged and counted; later messages go on; each is stored once', async () => {
    await (
      await jetstreamManager(nc)
    ).streams.add({
      name: 'HANDOVER',
      subjects: ['handover.>'],
      duplicate_window: 900 * 1e9,
    });
    const js = jetstream(nc);
    const logged: { msg: string; topic?: string }[] = [];
    const log = pino({ level: 'warn' }, { write: (line: string) => void logged.push(JSON.parse(line)) });
    let failures = 0;
    const failOnce = new Set([5, 9]);
    const source = new MqttSource({
      url: mqttUrl,
      clientId: 'handover-source',
      filters: ['handover/#'],
      windowSize: WINDOW,
      log,
      onHandlerFailure: () => failures++,
    });
    const total = 60;
    try {
      // seq 5 rejects and seq 9 throws before returning a promise, each the first time it arrives.
      await source.start((topic, payload) => {
        const seq = seqOf(payload);
        if (failOnce.delete(seq)) {
          if (seq === 9) throw new Error(`handler threw for seq ${seq}`);
          return Promise.reject(new Error(`handler rejected seq ${seq}`));
        }
        return js.publish('handover.unit-1', payload, { msgID: `unit-1.${seq}` }).then(() => undefined);
      });
      // In one burst, so that messages after a failure are already read when it drops the connection.
      await Promise.all(
        Array.from({ length: total }, (_, i) => devices.publish('handover/unit-1', telemetryJson(i + 1))),
      );

      const want = Array.from({ length: total }, (_, i) => i + 1);
      await waitFor(
        `all ${total} messages stored`,
        async () => (await storedSeqs(nc, 'HANDOVER', 'handover.unit-1')).length >= total,
        30_000,
      );
      await waitFor('every message acknowledged to the broker', () => source.inFlight === 0, 10_000);
      const seqs = await storedSeqs(nc, 'HANDOVER', 'handover.unit-1');
      assert.deepEqual(
        [...seqs].sort((a, b) => a - b),
        want,
        'each message stored exactly once',
      );
      assert.equal(failures, 2);
      assert.equal(
        logged.filter((l) => /not handed over: reconnecting/.test(l.msg)).length,
        2,
        JSON.stringify(logged),
      );
    } finally {
      await source.stop();
    }
  });

  test('a failure while preparing a message is redelivered like any other, and counted', async () => {
    const config: EdgeConfig = Value.Default(EdgeConfigSchema, {
      site: SITE,
      gateway: 'gw-handover',
      natsUrl,
      mqttUrl,
      mqttClientId: 'handover-bridge',
      windowSize: WINDOW,
      telemetryMaxBytes: 16 * 1024 ** 2,
      eventsMaxBytes: 16 * 1024 ** 2,
    }) as EdgeConfig;
    const bridge = new EdgeBridge({ config, log: silentLogger, registry: new Registry() });
    // A bug in preparing one message, the first time it arrives: it throws in the handler's turn.
    const internals = bridge as unknown as {
      prepare: (topic: string, payload: Buffer, atMs: number) => unknown;
    };
    const prepare = internals.prepare.bind(bridge);
    let thrown = false;
    internals.prepare = (topic, payload, atMs) => {
      if (!thrown && seqOf(payload) === 7) {
        thrown = true;
        throw new TypeError('prepare failed for seq 7');
      }
      return prepare(topic, payload, atMs);
    };
    const total = 40;
    await bridge.start();
    try {
      await Promise.all(
        Array.from({ length: total }, (_, i) =>
          devices.publish('bsu/unit-2/telemetry', telemetryJson(i + 1)),
        ),
      );
      const stream = siteStreamNames(SITE).telemetry;
      const subject = `bsu.${SITE}.unit-2.telemetry`;
      await waitFor(
        `all ${total} readings stored`,
        async () => (await storedSeqs(nc, stream, subject)).length >= total,
        30_000,
      );
      const seqs = await storedSeqs(nc, stream, subject);
      assert.deepEqual(
        [...seqs].sort((a, b) => a - b),
        Array.from({ length: total }, (_, i) => i + 1),
        'each reading stored exactly once',
      );
      assert.ok(thrown);
      assert.equal((await bridge.metrics.handOverFailures.get()).values[0]?.value, 1);
    } finally {
      await bridge.stop();
    }
  });
});
