/**
 * Edge benchmarks, each against the raw limit of the server behind it, in the same run:
 * - bridge throughput ÷ the same mosquitto's delivery rate to a bare QoS 1 subscriber, and ÷ the
 *   rate at which the same nats-server stores the same messages from a bare pipelined publisher;
 * - nats-server's own MQTT listener storing the same messages into a stream, side by side;
 * - hub catch-up rate after a 60 s uplink cut at 1,000 msgs/s;
 * - bridge resident memory at 5,000 msgs/s.
 */
import { jetstreamManager } from '@nats-io/jetstream';
import type { NatsConnection } from '@nats-io/transport-node';
import mqtt from 'mqtt';
import Value from 'typebox/value';
import { addSite } from '../cloud/hub-stream.ts';
import { AsyncPublisher } from '../edge/async-publisher.ts';
import { EdgeConfigSchema, SiteStreamConfigSchema, type SiteStreamConfig } from '../edge/config.ts';
import { siteStreamConfigs } from '../edge/site-streams.ts';
import { wireHeaders } from '../lib/nats.ts';
import { Header, MessageKind, messageId, schemaTag, subjectFor } from '../schemas/index.ts';
import { HUB_STREAM, siteStreamNames } from '../schemas/streams.ts';
import { runSimulator } from '../simulate/simulator.ts';
import { simulateConfig } from '../simulate/config.ts';
import { SimClock } from '../simulate/traffic.ts';
import { startBridge } from '../test/support/edge.ts';
import { runNaive } from './support/consumers.ts';
import { natsConnect, streamCount } from '../test/support/jetstream.ts';
import { sleep } from '../lib/timers.ts';
import { TestServers } from '../test/support/servers.ts';
import {
  cpuMeter,
  createSession,
  perSecond,
  publishAll,
  rssBytes,
  telemetryMessages,
  timeUntil,
  type Figure,
} from './support/common.ts';

/** How often a drain into a stream is sampled, ms. */
const DRAIN_SAMPLE_MS = 50;

export interface EdgeBenchOptions {
  /** Messages for the throughput runs. */
  messages: number;
  /** Length of the uplink cut (s). */
  cutS: number;
  /** Length of the memory run (s). */
  memoryS: number;
  log: (line: string) => void;
}

/**
 * Rate at which a nats-server stores `messages` into a stream configured like a site's telemetry
 * stream, from a bare publisher: the bridge's headers and message ids built beforehand, `window`
 * publishes in flight (the bridge's default window), each PubAck awaited. The raw limit of the
 * server behind the bridge.
 */
async function rawStoreRate(
  nc: NatsConnection,
  messages: { topic: string; payload: Buffer }[],
  window: number,
): Promise<number> {
  const site = 'raw-store';
  // Budgets this server has room for next to the site's own streams (they only bound the stream).
  const budgets = { telemetryMaxBytes: 256 * 2 ** 20, eventsMaxBytes: 16 * 2 ** 20 };
  const config = siteStreamConfigs(
    Value.Default(SiteStreamConfigSchema, { site, ...budgets }) as SiteStreamConfig,
  );
  await (await jetstreamManager(nc)).streams.add(config.telemetry);
  const receivedAt = new Date().toISOString();
  const requests = messages.map((m, i) => {
    const device = m.topic.split('/')[1]!;
    return {
      subject: subjectFor(site, device, MessageKind.telemetry),
      payload: m.payload,
      headers: wireHeaders([
        [Header.site, site],
        [Header.gateway, 'bench'],
        [Header.receivedAt, receivedAt],
        [Header.mqttTopic, m.topic],
        [Header.schema, schemaTag(MessageKind.telemetry)],
        [Header.msgId, messageId(site, device, MessageKind.telemetry, i, Date.now())],
      ]),
    };
  });
  const publisher = new AsyncPublisher(nc, 30_000);
  const t0 = performance.now();
  let next = 0;
  const worker = async (): Promise<void> => {
    while (next < requests.length) {
      const r = requests[next++]!;
      const ack = await publisher.publish(r.subject, r.payload, r.headers);
      if (ack.duplicate) throw new Error(`raw store: ${r.subject} taken as a duplicate`);
    }
  };
  await Promise.all(Array.from({ length: window }, worker));
  const ms = performance.now() - t0;
  publisher.close();
  return perSecond(messages.length, ms);
}

/** Rate at which mosquitto delivers `messages`, queued for a persistent session, to a bare QoS 1 subscriber. */
async function bareSubscriberRate(
  mqttUrl: string,
  messages: { topic: string; payload: Buffer }[],
): Promise<number> {
  const clientId = 'bench-bare-subscriber';
  await createSession(mqttUrl, clientId, 'bsu/+/+');
  await publishAll(mqttUrl, messages);
  let received = 0;
  let firstMs = NaN;
  let lastMs = NaN;
  const done = new Promise<void>((resolve) => {
    const client = mqtt.connect(mqttUrl, { clientId, clean: false, manualConnect: true });
    client.on('message', () => {
      const now = performance.now();
      if (received++ === 0) firstMs = now;
      lastMs = now;
      if (received === messages.length) {
        client.end();
        resolve();
      }
    });
    client.connect();
  });
  await done;
  return perSecond(messages.length - 1, lastMs - firstMs);
}

export async function benchEdge(options: EdgeBenchOptions): Promise<Figure[]> {
  const figures: Figure[] = [];
  const servers = new TestServers('bench-edge');
  try {
    const messages = telemetryMessages(options.messages);
    const avgBytes = Math.round(messages.reduce((a, m) => a + m.payload.length, 0) / messages.length);
    options.log(`edge: ${messages.length} telemetry payloads of ${avgBytes} bytes on average`);

    // 1. The raw limit: mosquitto → bare QoS 1 subscriber.
    const mosquitto = await servers.mosquitto();
    const bareRate = await bareSubscriberRate(mosquitto.url, messages);
    options.log(`edge: bare subscriber ${bareRate.toFixed(0)} msgs/s`);

    // 2. The bridge, draining the same queued messages into the site stream, PUBACK after PubAck.
    const site = await servers.nats({ domain: 'bench-site' });
    const siteNc = await natsConnect(site.url);
    const streams = siteStreamNames('bench-site');
    let bridge = await startBridge({
      site: 'bench-site',
      mqttUrl: mosquitto.url,
      natsUrl: site.url,
      compiled: true,
    });
    await bridge.stop();
    const publishRate = await publishAll(mosquitto.url, messages);
    bridge = await startBridge({
      site: 'bench-site',
      mqttUrl: mosquitto.url,
      natsUrl: site.url,
      compiled: true,
    });
    const storedAtReady = await streamCount(siteNc, streams.telemetry);
    const cpu = cpuMeter({ bridge: bridge.child.pid! });
    // Sampled every 50 ms (±2 % on these runs): polling the stream harder takes CPU from the very
    // processes being measured, while the bare subscriber counts for free in its own callback.
    const t = await timeUntil('bridge drain', () => streamCount(siteNc, streams.telemetry), messages.length, {
      everyMs: DRAIN_SAMPLE_MS,
    });
    const bridgeRate = perSecond(messages.length, t.doneMs - t.firstMs);
    const bridgeCpuUs = cpu.perMessage(messages.length - storedAtReady).bridge!;
    await bridge.stop();
    options.log(`edge: bridge ${bridgeRate.toFixed(0)} msgs/s`);
    figures.push({
      stage: 'edge',
      name: 'bridge throughput (stored in site stream, PUBACK after PubAck)',
      value: Math.round(bridgeRate),
      unit: 'msgs/s',
      baseline: { name: 'same mosquitto → bare QoS 1 subscriber', value: Math.round(bareRate) },
      ratio: bridgeRate / bareRate,
      target: { op: '>=', value: 0.9, of: 'ratio' },
      note:
        `${messages.length} queued messages of ${avgBytes} B; device publish rate into mosquitto ${Math.round(publishRate)} msgs/s; ` +
        `the bridge process used ${bridgeCpuUs.toFixed(0)} µs of CPU per message (from /proc, from ready to drained)`,
    });

    // 2a. What a user would write instead (bench/naive/bridge.ts), on the same queued messages and
    // the same nats-server: the bridge's own CPU per message against it.
    await (await jetstreamManager(siteNc)).streams.add({ name: 'NAIVE', subjects: ['naive.>'] });
    const naiveClient = 'bench-naive-bridge';
    await createSession(mosquitto.url, naiveClient, 'bsu/+/+');
    await publishAll(mosquitto.url, messages);
    const naive = await runNaive(
      'bridge',
      {
        mqttUrl: mosquitto.url,
        clientId: naiveClient,
        natsUrl: site.url,
        site: 'bench-site',
        messages: messages.length,
      },
      600_000,
    );
    const naiveCpuUs = naive.cpuUs / naive.messages;
    options.log(
      `edge: naive bridge ${perSecond(naive.messages, naive.ms).toFixed(0)} msgs/s, ${naiveCpuUs.toFixed(1)} µs/msg`,
    );
    figures.push({
      stage: 'edge',
      name: 'bridge CPU per message ÷ the naive script',
      value: Math.round(bridgeCpuUs * 10) / 10,
      unit: 'µs',
      baseline: {
        name: 'MQTT.js handleMessage → js.publish with a message id, PUBACK after the PubAck',
        value: Math.round(naiveCpuUs * 10) / 10,
      },
      ratio: bridgeCpuUs / naiveCpuUs,
      target: { op: '<=', value: 1, of: 'ratio' },
      note:
        `the naive script stored the same ${messages.length} queued messages at ${perSecond(naive.messages, naive.ms).toFixed(0)} msgs/s, ` +
        'one at a time; it validates nothing, keeps no invalid message and holds no order across a failure',
    });

    // 2b. The raw limit of the server behind the bridge: the same messages stored by the same
    // nats-server from a bare publisher, as many in flight as the bridge's window.
    const window = (Value.Default(EdgeConfigSchema, {}) as { windowSize: number }).windowSize;
    const storeRate = await rawStoreRate(siteNc, messages, window);
    options.log(`edge: raw JetStream store ${storeRate.toFixed(0)} msgs/s`);
    figures.push({
      stage: 'edge',
      name: 'raw JetStream store of the same messages (bare pipelined publisher, same nats-server)',
      value: Math.round(storeRate),
      unit: 'msgs/s',
      baseline: { name: 'same mosquitto → bare QoS 1 subscriber', value: Math.round(bareRate) },
      ratio: storeRate / bareRate,
      note:
        `the bridge's headers and message ids, built beforehand; ${window} publishes in flight (the bridge's window), ` +
        `each PubAck awaited, first publish to last PubAck, a stream configured like a site's telemetry stream; ` +
        `the bridge reached ${(bridgeRate / storeRate).toFixed(2)} × this rate`,
    });

    // 3. The peer: nats-server's own MQTT listener, storing the same messages into a stream.
    const natsMqtt = await servers.nats({ domain: 'bench-mqtt', mqtt: true });
    const peerNc = await natsConnect(natsMqtt.url);
    await (await jetstreamManager(peerNc)).streams.add({ name: 'MQTT_PEER', subjects: ['bsu.>'] });
    const peerStart = performance.now();
    const peerDone = timeUntil('nats-server MQTT', () => streamCount(peerNc, 'MQTT_PEER'), messages.length, {
      everyMs: DRAIN_SAMPLE_MS,
    });
    await publishAll(natsMqtt.mqttUrl!, messages);
    const peer = await peerDone;
    const peerRate = perSecond(messages.length, peer.doneMs - peerStart);
    figures.push({
      stage: 'edge',
      name: "nats-server's own MQTT listener → JetStream stream (peer, for comparison)",
      value: Math.round(peerRate),
      unit: 'msgs/s',
      note: 'publish → stored, QoS 1 pipelined publisher; nats-server 2.9 sends the PUBACK without waiting for the stream',
    });
    await peerNc.close();

    // 4. Memory at 5,000 msgs/s, sampled from /proc while the simulator publishes.
    bridge = await startBridge({
      site: 'bench-site',
      mqttUrl: mosquitto.url,
      natsUrl: site.url,
      compiled: true,
    });
    const before = await streamCount(siteNc, streams.telemetry);
    const samples: number[] = [];
    const sampler = setInterval(() => samples.push(rssBytes(bridge.child.pid!)), 250);
    const report = await runSimulator(
      simulateConfig({
        mqtt: mosquitto.url,
        devices: 500,
        rate: 5000,
        duration: options.memoryS,
        clock: SimClock.wall,
        statusEveryMs: 60_000,
      }),
      new AbortController().signal,
    );
    await timeUntil(
      'bridge keeps up',
      () => streamCount(siteNc, streams.telemetry),
      before + report.byKind.telemetry,
      { timeoutMs: 60_000 },
    );
    clearInterval(sampler);
    await bridge.stop();
    const maxRss = Math.max(...samples);
    figures.push({
      stage: 'edge',
      name: 'bridge resident memory at 5,000 msgs/s',
      value: Math.round(maxRss / 1024 / 1024),
      unit: 'MB',
      target: { op: '<=', value: 100, of: 'value' },
      note: `max of ${samples.length} samples over ${options.memoryS} s; simulator achieved ${Math.round(report.sent / (report.elapsedMs / 1000))} msgs/s`,
    });
    await siteNc.close();

    // 5. Catch-up after an uplink cut: hub ← link ← site ← bridge, 1,000 msgs/s during the cut.
    const topo = await servers.hubAndSite('site-1');
    const siteMqtt = await servers.mosquitto();
    const hubNc = await natsConnect(topo.hub.url);
    await addSite(await jetstreamManager(hubNc), 'site-1', {
      hubMaxAgeS: 3600,
      hubMaxBytes: -1,
      hubDuplicateWindowS: 900,
    });
    bridge = await startBridge({
      site: 'site-1',
      mqttUrl: siteMqtt.url,
      natsUrl: topo.site.url,
      compiled: true,
    });
    process.kill(topo.link.pid, 'SIGUSR1');
    await sleep(500);
    const atCut = await streamCount(hubNc, HUB_STREAM);
    options.log(`edge: uplink cut, publishing 1,000 msgs/s for ${options.cutS} s`);
    const cut = await runSimulator(
      simulateConfig({
        mqtt: siteMqtt.url,
        devices: 200,
        rate: 1000,
        duration: options.cutS,
        clock: SimClock.wall,
        statusEveryMs: 60_000,
      }),
      new AbortController().signal,
    );
    const siteNc2 = await natsConnect(topo.site.url);
    const backlogTarget = cut.sent;
    await timeUntil(
      'site stream holds the backlog',
      async () =>
        (await streamCount(siteNc2, siteStreamNames('site-1').telemetry)) +
        (await streamCount(siteNc2, siteStreamNames('site-1').events)),
      backlogTarget,
    );
    const healedAt = performance.now();
    process.kill(topo.link.pid, 'SIGUSR2');
    const drain = await timeUntil(
      'hub catch-up',
      () => streamCount(hubNc, HUB_STREAM),
      atCut + backlogTarget,
      {
        from: atCut,
        everyMs: 5,
      },
    );
    const drainRate = perSecond(backlogTarget, drain.doneMs - drain.firstMs);
    figures.push({
      stage: 'edge',
      name: `hub catch-up after a ${options.cutS} s uplink cut at 1,000 msgs/s`,
      value: Math.round(drainRate),
      unit: 'msgs/s',
      target: { op: '>=', value: 10_000, of: 'value' },
      note: `${backlogTarget} messages; from first sourced message to the last; ${((drain.firstMs - healedAt) / 1000).toFixed(1)} s from heal to first (nats-server re-creates the source consumer), ${((drain.doneMs - healedAt) / 1000).toFixed(1)} s from heal to done`,
    });
    await bridge.stop();
    await siteNc2.close();
    await hubNc.close();
  } finally {
    await servers.stopAll();
  }
  return figures;
}
