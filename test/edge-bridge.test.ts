/**
 * The edge bridge end to end, through real servers: devices → mosquitto → bridge → site JetStream
 * → leaf link → hub stream BSU. Counted on the hub.
 */
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { jetstreamManager } from '@nats-io/jetstream';
import type { NatsConnection } from '@nats-io/transport-node';
import { addSite, listSites } from '../cloud/hub-stream.ts';
import { ensureSiteStreams } from '../edge/site-streams.ts';
import { Header } from '../schemas/index.ts';
import { HUB_STREAM, siteStreamNames } from '../schemas/streams.ts';
import { siteLeafConnected } from '../stack/leafz.ts';
import { killServer, type RunningServer } from '../stack/server-process.ts';
import {
  DevicePublisher,
  startBridge,
  statusJson,
  SteadyLoad,
  telemetryJson,
  type BridgeProcess,
  SITE_LIMITS,
} from './support/edge.ts';
import { natsConnect, readStream, streamCount } from './support/jetstream.ts';
import { metricValue, runSwitchyard } from './support/process.ts';
import { TestServers, waitFor } from './support/servers.ts';

const HUB_CONFIG = { hubMaxAgeS: 3600, hubMaxBytes: -1, hubDuplicateWindowS: 900 };
/** Readings the bridge received and has not stored yet. */
const IN_FLIGHT = 'switchyard_edge_in_flight{service="switchyard-edge"}';

/** Asserts that the hub holds exactly `expected` telemetry readings per device, once each, in order. */
async function assertExactlyOnce(
  hub: NatsConnection,
  expected: Map<string, number>,
  extra = 0,
): Promise<void> {
  const total = [...expected.values()].reduce((a, b) => a + b, 0) + extra;
  await waitFor(
    `BSU to hold ${total} messages`,
    async () => (await streamCount(hub, HUB_STREAM)) >= total,
    90_000,
    200,
  );
  const messages = await readStream(hub, HUB_STREAM, { filter: 'bsu.*.*.telemetry' });
  const seqsByDevice = new Map<string, number[]>();
  for (const m of messages) {
    const device = m.subject.split('.')[2]!;
    const seq = (JSON.parse(Buffer.from(m.payload).toString()) as { seq: number }).seq;
    seqsByDevice.set(device, [...(seqsByDevice.get(device) ?? []), seq]);
  }
  for (const [device, count] of expected) {
    const seqs = seqsByDevice.get(device) ?? [];
    const want = Array.from({ length: count }, (_, i) => i + 1);
    assert.equal(seqs.length, count, `${device}: ${seqs.length} stored, ${count} published`);
    assert.deepEqual(seqs, want, `${device}: readings missing, duplicated or out of order`);
  }
}

describe('edge bridge → site stream → hub', () => {
  const servers = new TestServers('edge');
  let hubServer: RunningServer;
  let siteServer: RunningServer;
  let link: RunningServer;
  let hubLeafPort: number;
  let mqttUrl: string;
  let hub: NatsConnection;
  let bridge: BridgeProcess;
  let devices: DevicePublisher;

  before(async () => {
    const topo = await servers.hubAndSite('site-1');
    [hubServer, siteServer, link, hubLeafPort] = [topo.hub, topo.site, topo.link, topo.hubLeafPort];
    mqttUrl = (await servers.mosquitto()).url;
    hub = await natsConnect(hubServer.url);
    await addSite(await jetstreamManager(hub), 'site-1', HUB_CONFIG);
    bridge = await startBridge({ site: 'site-1', mqttUrl, natsUrl: siteServer.url });
    devices = await DevicePublisher.connect(mqttUrl);
  });

  after(async () => {
    await devices?.close();
    await bridge?.stop();
    await hub?.close();
    await servers.stopAll();
  });

  test('stores each reading once on the hub, in per-device order, bytes and headers intact', async () => {
    const sent = new Map<string, string>();
    const counts = new Map<string, number>();
    const work: Promise<void>[] = [];
    for (let seq = 1; seq <= 100; seq++) {
      for (let d = 1; d <= 5; d++) {
        const device = `order-${d}`;
        const payload = telemetryJson(seq);
        sent.set(`${device}:${seq}`, payload);
        counts.set(device, seq);
        work.push(devices.publish(`bsu/${device}/telemetry`, payload));
      }
    }
    work.push(devices.publish('bsu/order-1/status', statusJson(1)));
    await Promise.all(work);
    await assertExactlyOnce(hub, counts, 1);

    const stored = await readStream(hub, HUB_STREAM);
    const status = stored.filter((m) => m.subject === 'bsu.site-1.order-1.status');
    assert.equal(status.length, 1);
    for (const m of stored.filter((x) => x.subject.endsWith('.telemetry'))) {
      const device = m.subject.split('.')[2]!;
      const text = Buffer.from(m.payload).toString();
      const seq = (JSON.parse(text) as { seq: number }).seq;
      assert.equal(text, sent.get(`${device}:${seq}`), 'payload bytes must be untouched');
      assert.equal(m.headers[Header.site], 'site-1');
      assert.equal(m.headers[Header.gateway], 'gw-site-1');
      assert.equal(m.headers[Header.mqttTopic], `bsu/${device}/telemetry`);
      assert.equal(m.headers[Header.schema], 'telemetry/1');
      assert.match(m.headers[Header.receivedAt]!, /^\d{4}-\d\d-\d\dT/);
      assert.match(m.headers[Header.msgId]!, new RegExp(`^site-1\\.${device}\\.telemetry\\.${seq}\\.\\d+$`));
    }
  });

  test('loses and duplicates nothing through a cut uplink, hub and site restarts, and a killed bridge', async () => {
    const names = ['steady-1', 'steady-2', 'steady-3', 'steady-4'];
    const site = await natsConnect(siteServer.url);
    const siteStream = siteStreamNames('site-1').telemetry;
    const load = new SteadyLoad(devices, names, 200);
    const settle = async (what: string): Promise<void> => {
      await load.pause();
      const before = await streamCount(hub, HUB_STREAM);
      await assertExactlyOnce(hub, load.sent, 501).catch((err: Error) => {
        throw new Error(`after ${what}: ${err.message} (BSU had ${before})`);
      });
      load.resume();
    };
    /** Resolves once `count()` has grown by `n` from now: the system got that far. */
    const grows = async (what: string, count: () => number | Promise<number>, n: number): Promise<void> => {
      const from = await count();
      await waitFor(what, async () => (await count()) >= from + n, 120_000, 50);
    };
    const hubCount = () => streamCount(hub, HUB_STREAM);
    const siteCount = () => streamCount(site, siteStream);
    const flowing = () => grows('readings reaching the hub', hubCount, 100);
    try {
      await flowing();

      // Uplink cut while the site stores 1,500 readings (about 25 s of the load here): the hub
      // catches up after.
      process.kill(link.pid, 'SIGUSR1');
      await waitFor(
        'the hub to drop the leaf',
        async () => (await siteLeafConnected(hubServer.monitorUrl!, 'site-1')) === false,
        15_000,
        50,
      );
      const countAtCut = await hubCount();
      await grows('the site to store 1,500 readings while cut off', siteCount, 1_500);
      assert.ok((await hubCount()) - countAtCut < 50, 'the hub must not receive while the link is cut');
      process.kill(link.pid, 'SIGUSR2');
      await settle('an uplink cut');

      await flowing();
      await killServer(hubServer);
      await grows('the site to store 200 readings while the hub is down', siteCount, 200);
      hubServer = await servers.restart(hubServer);
      await settle('a hub restart');

      await flowing();
      await killServer(siteServer);
      await grows(
        'the broker to take 200 readings while the site JetStream is down',
        () => devices.acked,
        200,
      );
      siteServer = await servers.restart(siteServer);
      await settle('a site nats-server restart');

      await flowing();
      await bridge.stop('SIGKILL');
      await grows('the broker to queue 100 readings for the dead bridge', () => devices.acked, 100);
      bridge = await startBridge({ site: 'site-1', mqttUrl, natsUrl: siteServer.url });
      await settle('a SIGKILLed bridge');

      // The PUBACK follows the PubAck: readings the bridge held while its JetStream was down, and
      // then lost with the process, are still queued in the broker and arrive after the restart.
      await flowing();
      await killServer(siteServer);
      await waitFor(
        'the bridge to hold 100 readings it cannot store',
        async () => (await metricValue(bridge.opsUrl, IN_FLIGHT)) >= 100,
        60_000,
        50,
      );
      await bridge.stop('SIGKILL');
      siteServer = await servers.restart(siteServer);
      bridge = await startBridge({ site: 'site-1', mqttUrl, natsUrl: siteServer.url });
      await settle('a bridge SIGKILLed while its JetStream was down');
      assert.ok(load.total > 1000, `steady load sent ${load.total}`);
    } finally {
      await load.stop();
      await site.close();
    }
  });

  test('a third site added to the running hub is sourced without a hub restart', async () => {
    const hubPid = hubServer.pid;
    const existing = { hub: hubServer, hubLeafPort };
    const site2 = await servers.hubAndSite('site-2', existing);
    const site3 = await servers.hubAndSite('site-3', existing);
    const jsm = await jetstreamManager(hub);
    await addSite(jsm, 'site-2', HUB_CONFIG);
    const before = await streamCount(hub, HUB_STREAM);
    for (const [site, server] of [
      ['site-2', site2.site],
      ['site-3', site3.site],
    ] as const) {
      const nc = await natsConnect(server.url);
      await ensureSiteStreams(await jetstreamManager(nc), { site, natsUrl: server.url, ...SITE_LIMITS });
      const js = (await import('@nats-io/jetstream')).jetstream(nc);
      for (let i = 1; i <= 20; i++)
        await js.publish(`bsu.${site}.unit-1.telemetry`, telemetryJson(i), { msgID: `${site}-${i}` });
      await nc.close();
    }
    const added = await runSwitchyard(['site', 'add', 'site-3', '--nats-url', hubServer.url]);
    assert.equal(added.code, 0, added.output);
    await waitFor(
      'site-2 and site-3 sourced',
      async () => (await streamCount(hub, HUB_STREAM)) === before + 40,
      30_000,
    );
    assert.equal(hubServer.pid, hubPid, 'the hub was not restarted');
    const sites = await listSites(jsm);
    assert.deepEqual(
      sites.map((s) => s.site),
      ['site-1', 'site-2', 'site-3'],
    );
    const listed = await runSwitchyard(['site', 'list', '--json', '--nats-url', hubServer.url]);
    assert.equal(listed.code, 0, listed.output);
    const parsed = JSON.parse(listed.output) as { site: string; lag: number }[];
    assert.deepEqual(
      parsed.map((s) => [s.site, s.lag]),
      [
        ['site-1', 0],
        ['site-2', 0],
        ['site-3', 0],
      ],
    );
  });
});
