/**
 * One site flooding the hub, on a real hub with two leaf-connected sites: what the flood costs the
 * other site unpaused (measured), then `site pause` keeping the flood in the site's own streams
 * while the other site flows on, and `site resume` bringing every reading of the pause into BSU
 * once, in order.
 */
import assert from 'node:assert/strict';
import { after, describe, test } from 'node:test';
import { jetstream, jetstreamManager } from '@nats-io/jetstream';
import { addSite, listSites } from '../cloud/hub-stream.ts';
import { ensureSiteStreams } from '../edge/site-streams.ts';
import { sleep } from '../lib/timers.ts';
import { HUB_STREAM } from '../schemas/streams.ts';
import { natsConnect, readStream, streamCount } from './support/jetstream.ts';
import { SITE_LIMITS } from './support/edge.ts';
import { runSwitchyard } from './support/process.ts';
import { TestServers, waitFor } from './support/servers.ts';

const FLOOD = 5_000;

const range = (from: number, to: number) => Array.from({ length: to - from + 1 }, (_, i) => from + i);

describe('a site flooding the hub', () => {
  const servers = new TestServers('hub-flood');
  after(() => servers.stopAll());

  test('pause keeps the flood at its site while the other flows on; resume brings each reading once', async (t) => {
    const a = await servers.hubAndSite('site-a');
    const b = await servers.hubAndSite('site-b', a);
    const hubUrl = a.hub.url;
    const hub = await natsConnect(hubUrl);
    t.after(() => hub.close());
    const jsm = await jetstreamManager(hub);
    const limits = { hubMaxAgeS: 3600, hubMaxBytes: -1, hubDuplicateWindowS: 900 };
    await addSite(jsm, 'site-a', limits);
    await addSite(jsm, 'site-b', limits);

    /**
     * Publishes readings `from`..`to` of a site's one unit, 500 at a time, or one every `everyMs`.
     * No message id: de-duplication cannot hide a reading sourced twice.
     */
    type Publish = (from: number, to: number, everyMs?: number) => Promise<void>;
    const publishers = new Map<string, Publish>();
    for (const [site, server] of [
      ['site-a', a.site],
      ['site-b', b.site],
    ] as const) {
      const nc = await natsConnect(server.url);
      t.after(() => nc.close());
      await ensureSiteStreams(await jetstreamManager(nc), { site, natsUrl: server.url, ...SITE_LIMITS });
      const js = jetstream(nc);
      publishers.set(site, async (from, to, everyMs = 0) => {
        const step = everyMs > 0 ? 1 : 500;
        for (let n = from; n <= to; n += step) {
          const acks = [];
          for (let i = n; i <= Math.min(to, n + step - 1); i++) {
            const reading = JSON.stringify({ site, n: i, sentAtMs: Date.now() });
            acks.push(js.publish(`bsu.${site}.unit-1.telemetry`, reading));
          }
          await Promise.all(acks);
          if (everyMs > 0) await sleep(everyMs);
        }
      });
    }
    const publish = (site: string, from: number, to: number, everyMs?: number) =>
      publishers.get(site)!(from, to, everyMs);
    const readings = async (site: string) =>
      (await readStream(hub, HUB_STREAM, { filter: `bsu.${site}.>` })).map((m) => ({
        ...(JSON.parse(Buffer.from(m.payload).toString()) as { n: number; sentAtMs: number }),
        storedAtMs: m.storedAtMs,
      }));
    const atHub = async (site: string) => (await readings(site)).map((r) => r.n);
    const hubCount = () => streamCount(hub, HUB_STREAM);

    await publish('site-a', 1, 100);
    await publish('site-b', 1, 100);
    await waitFor('both sites sourced', async () => (await hubCount()) === 200, 30_000);

    // Not paused: site-a floods while site-b sends 20 readings a second. Each source has its own
    // flow into BSU, so site-b is not starved; what the flood costs it is reported, not asserted.
    const floodStart = Date.now();
    await Promise.all([publish('site-a', 101, 100 + FLOOD), publish('site-b', 101, 200, 50)]);
    await waitFor(
      'the flood and site-b sourced',
      async () => (await hubCount()) === 300 + FLOOD,
      60_000,
      100,
    );
    const latencies = (await readings('site-b'))
      .filter((r) => r.n > 100)
      .map((r) => r.storedAtMs - r.sentAtMs)
      .sort((x, y) => x - y);
    t.diagnostic(
      `unpaused: ${FLOOD} flood readings and 100 of site-b's in BSU ${Date.now() - floodStart} ms after ` +
        `the flood began; site-b's readings reached BSU in ${latencies[50]} ms (median), ${latencies.at(-1)} ms (max)`,
    );

    const paused = await runSwitchyard(['site', 'pause', 'site-a', '--nats-url', hubUrl]);
    assert.equal(paused.code, 0, paused.output);
    assert.match(paused.stdout, /site-a: paused/);
    const second = 100 + FLOOD;
    await publish('site-a', second + 1, second + FLOOD);
    // Published after the flood: once site-b's are in, the flood would have been too.
    await publish('site-b', 201, 300);
    await waitFor('site-b sourced on', async () => (await atHub('site-b')).length === 300, 30_000);
    assert.deepEqual(await atHub('site-a'), range(1, second), 'nothing of the paused flood reached BSU');
    const siteA = await natsConnect(a.site.url);
    t.after(() => siteA.close());
    assert.equal(
      await streamCount(siteA, 'SITE_site-a_TELEMETRY'),
      second + FLOOD,
      'the flood waits at its site',
    );

    const listed = await runSwitchyard(['site', 'list', '--json', '--nats-url', hubUrl]);
    assert.equal(listed.code, 0, listed.output);
    assert.deepEqual(
      (JSON.parse(listed.stdout) as { site: string; paused: boolean }[]).map((s) => [s.site, s.paused]),
      [
        ['site-a', true],
        ['site-b', false],
      ],
    );
    // Onboarding again does not undo an operator's pause.
    const added = await runSwitchyard(['site', 'add', 'site-a', '--nats-url', hubUrl]);
    assert.equal(added.code, 0, added.output);
    assert.match(added.stdout, /site-a: paused/);
    assert.deepEqual(
      (await listSites(jsm)).map((s) => s.site),
      ['site-b'],
      'BSU sources site-b alone',
    );

    const resumeStart = Date.now();
    const resumed = await runSwitchyard(['site', 'resume', 'site-a', '--nats-url', hubUrl]);
    assert.equal(resumed.code, 0, resumed.output);
    await waitFor('the paused flood sourced', async () => (await hubCount()) >= 400 + 2 * FLOOD, 60_000, 100);
    t.diagnostic(`resume: the ${FLOOD} readings of the pause in BSU after ${Date.now() - resumeStart} ms`);
    await waitFor('no lag left', async () => (await listSites(jsm)).every((s) => s.lag === 0), 30_000);
    assert.deepEqual(await atHub('site-a'), range(1, second + FLOOD), 'every reading once, in order');
    assert.deepEqual(await atHub('site-b'), range(1, 300));
    assert.equal(await hubCount(), 400 + 2 * FLOOD);

    const unknown = await runSwitchyard(['site', 'pause', 'site-z', '--nats-url', hubUrl]);
    assert.equal(unknown.code, 2, unknown.output);
    assert.match(unknown.output, /site-z is not sourced by BSU/);
  });
});
