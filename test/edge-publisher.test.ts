/**
 * The bridge's JetStream publishing path (edge/async-publisher.ts, edge/ordered-publisher.ts)
 * against a real nats-server that is killed while publishes are in flight: what the stream ends
 * up holding is every message once, in the order it was handed over.
 */
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { jetstreamManager } from '@nats-io/jetstream';
import type { NatsConnection } from '@nats-io/transport-node';
import { AsyncPublisher } from '../edge/async-publisher.ts';
import { OrderedPublisher } from '../edge/ordered-publisher.ts';
import { silentLogger } from '../lib/log.ts';
import { connectNats, wireHeaders } from '../lib/nats.ts';
import { sleep } from '../lib/timers.ts';
import { Header } from '../schemas/headers.ts';
import { killServer, type RunningServer } from '../stack/server-process.ts';
import { natsConnect, readStream } from './support/jetstream.ts';
import { TestServers, waitFor } from './support/servers.ts';

describe('JetStream publishing through a site nats-server crash', () => {
  const servers = new TestServers('edge-publisher');
  let server: RunningServer;

  before(async () => {
    server = await servers.nats();
  });

  after(() => servers.stopAll());

  test('stores every message once and in order when the server is killed with publishes in flight', async () => {
    const setup = await natsConnect(server.url);
    await (
      await jetstreamManager(setup)
    ).streams.add({
      name: 'ORDER',
      subjects: ['order.>'],
      duplicate_window: 900 * 1e9,
    });
    await setup.close();

    // The bridge's connection settings and its default publish timeout and window.
    const nc: NatsConnection = await connectNats({ url: server.url, name: 'edge-publisher-test' });
    const controller = new AbortController();
    const publisher = new OrderedPublisher(new AsyncPublisher(nc, 5_000), {
      log: silentLogger,
      signal: controller.signal,
    });
    let disconnects = 0;
    void (async () => {
      for await (const status of nc.status()) if (status.type === 'disconnect') disconnects++;
    })();
    const total = 6_000;
    const window = 1_000;
    const inFlight = new Set<Promise<unknown>>();
    let killed = false;
    try {
      for (let seq = 1; seq <= total; seq++) {
        while (inFlight.size >= window) await Promise.race(inFlight);
        const stored = publisher.publish({
          subject: 'order.unit-1.telemetry',
          payload: new TextEncoder().encode(String(seq)),
          headers: wireHeaders([[Header.msgId, `unit-1.${seq}`]]),
        });
        inFlight.add(stored);
        void stored.finally(() => inFlight.delete(stored));
        // A steady flow, so that hundreds are in flight when the server dies.
        if (seq % 20 === 0) await sleep(5);
        if (seq === total / 3) {
          await killServer(server);
          killed = true;
          // Restarted only once the client has seen the loss, which fails what was in flight.
          await waitFor('the client to see the server gone', () => disconnects > 0, 10_000, 5);
          server = await servers.restart(server);
        }
      }
      await Promise.all(inFlight);
    } finally {
      controller.abort();
      await nc.close();
    }
    assert.ok(killed);

    const reader = await natsConnect(server.url);
    try {
      const stored = (await readStream(reader, 'ORDER')).map((m) =>
        Number(new TextDecoder().decode(m.payload)),
      );
      const expected = Array.from({ length: total }, (_, i) => i + 1);
      const firstOff = stored.findIndex((seq, i) => seq !== expected[i]);
      assert.equal(
        firstOff,
        -1,
        `stored ${stored.length} of ${total}; first out of place at position ${firstOff + 1}: ` +
          `${stored.slice(Math.max(0, firstOff - 2), firstOff + 5).join(', ')}`,
      );
      assert.equal(stored.length, total);
    } finally {
      await reader.close();
    }
  });
});
