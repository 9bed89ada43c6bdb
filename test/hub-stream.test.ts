/**
 * Onboarding against a real hub nats-server: what `site add/remove` change in BSU, and what not.
 * Each test has a hub of its own, so that it starts from no BSU and sees only what it did.
 */
import assert from 'node:assert/strict';
import { after, describe, test, type TestContext } from 'node:test';
import { jetstream, jetstreamManager, type JetStreamManager } from '@nats-io/jetstream';
import {
  addSite,
  ensureHubStream,
  HubStreamFullError,
  listSites,
  removeSite,
  siteSources,
  type HubStreamLimits,
} from '../cloud/hub-stream.ts';
import { ensureSiteStreams } from '../edge/site-streams.ts';
import { HUB_STREAM } from '../schemas/streams.ts';
import { SITE_LIMITS } from './support/edge.ts';
import { natsConnect, readStream, streamCount } from './support/jetstream.ts';
import { TestServers, waitFor } from './support/servers.ts';

const HOUR_S = 3600;

describe('hub stream onboarding', () => {
  const servers = new TestServers('hub-stream');
  after(() => servers.stopAll());

  /** A fresh hub nats-server for test `t`: its manager, and the settings that point at it. */
  async function freshHub(t: TestContext): Promise<{ jsm: JetStreamManager; natsUrl: string }> {
    const { url: natsUrl } = await servers.nats();
    const nc = await natsConnect(natsUrl);
    t.after(() => nc.close());
    return { jsm: await jetstreamManager(nc), natsUrl };
  }

  const limits = (natsUrl: string, hubMaxAgeS = HOUR_S): HubStreamLimits & { natsUrl: string } => ({
    natsUrl,
    hubMaxAgeS,
    hubMaxBytes: -1,
    hubDuplicateWindowS: 900,
  });

  test('site add creates BSU sourcing the three site streams over the leaf with a per-site deliver prefix, once', async (t) => {
    const { jsm, natsUrl } = await freshHub(t);
    const config = { ...limits(natsUrl, 2 * HOUR_S), hubDuplicateWindowS: 600 };
    await addSite(jsm, 'site-a', config);
    await addSite(jsm, 'site-a', config);
    const info = await jsm.streams.info(HUB_STREAM);
    assert.deepEqual(info.config.sources, siteSources('site-a'));
    assert.deepEqual(
      info.config.sources?.map((s) => [s.name, s.external?.api, s.external?.deliver]),
      [
        ['SITE_site-a_TELEMETRY', '$JS.site-a.API', 'deliver.site-a'],
        ['SITE_site-a_EVENTS', '$JS.site-a.API', 'deliver.site-a'],
        ['SITE_site-a_INVALID', '$JS.site-a.API', 'deliver.site-a'],
      ],
    );
    assert.equal(info.config.max_age, 2 * HOUR_S * 1e9);
    assert.equal(info.config.duplicate_window, 600 * 1e9);
  });

  test('site add leaves the limits an operator set on BSU alone', async (t) => {
    const { jsm, natsUrl } = await freshHub(t);
    await ensureHubStream(jsm, {
      hubMaxAgeS: 5 * HOUR_S,
      hubMaxBytes: 1024 ** 3,
      hubDuplicateWindowS: 300,
    });
    await addSite(jsm, 'site-b', limits(natsUrl));
    const { config } = await jsm.streams.info(HUB_STREAM);
    assert.equal(config.max_age, 5 * HOUR_S * 1e9);
    assert.equal(config.max_bytes, 1024 ** 3);
    assert.equal(config.duplicate_window, 300 * 1e9);
    assert.deepEqual(config.sources, siteSources('site-b'));
    assert.deepEqual(
      (await listSites(jsm)).map((s) => s.site),
      ['site-b'],
    );
  });

  test('site add past what one stream config can hold is refused with the reason; BSU keeps every site it had', async (t) => {
    // 64 KiB of max_payload holds the sources of about 150 sites (1 MiB: about 2,450).
    const { url: natsUrl } = await servers.nats({ maxPayloadBytes: 64 * 1024 });
    const nc = await natsConnect(natsUrl);
    t.after(() => nc.close());
    const jsm = await jetstreamManager(nc);
    const site = (i: number): string => `site-${String(i).padStart(4, '0')}`;
    let added = 0;
    let refused: unknown;
    while (!refused && added < 1000) {
      try {
        await addSite(jsm, site(added), limits(natsUrl));
        added++;
      } catch (err) {
        refused = err;
      }
    }
    assert.ok(refused instanceof HubStreamFullError, String(refused));
    assert.match(
      refused.message,
      new RegExp(`cannot add ${site(added)}: BSU would source ${added + 1} sites`),
    );
    assert.ok(added > 100, `only ${added} sites fit`);
    const sources = (await jsm.streams.info(HUB_STREAM)).config.sources ?? [];
    assert.equal(sources.length, added * 3);
    assert.deepEqual(
      sources.map((s) => s.name),
      Array.from({ length: added }, (_, i) => siteSources(site(i)).map((s) => s.name)).flat(),
    );
  });

  test('site remove stops sourcing one site and keeps the others', async (t) => {
    const { jsm, natsUrl } = await freshHub(t);
    await addSite(jsm, 'site-a', limits(natsUrl));
    await addSite(jsm, 'site-b', limits(natsUrl));
    assert.deepEqual(
      (await listSites(jsm)).map((s) => s.site),
      ['site-a', 'site-b'],
    );
    assert.equal(await removeSite(jsm, 'site-a'), true);
    assert.equal(await removeSite(jsm, 'site-a'), false);
    const { config } = await jsm.streams.info(HUB_STREAM);
    assert.deepEqual(config.sources, siteSources('site-b'));
    assert.deepEqual(
      (await listSites(jsm)).map((s) => s.site),
      ['site-b'],
    );
  });

  test('site add turns the unfiltered sources of an older version into filtered ones that take effect', async (t) => {
    const { hub, site } = await servers.hubAndSite('site-a');
    const hubNc = await natsConnect(hub.url);
    const siteNc = await natsConnect(site.url);
    t.after(() => Promise.all([hubNc.close(), siteNc.close()]));
    const jsm = await jetstreamManager(hubNc);
    const siteJsm = await jetstreamManager(siteNc);
    await ensureSiteStreams(siteJsm, { site: 'site-a', natsUrl: site.url, ...SITE_LIMITS });
    // A hostile gateway makes its telemetry stream capture another site's subjects too.
    const telemetry = (await siteJsm.streams.info('SITE_site-a_TELEMETRY')).config;
    await siteJsm.streams.update('SITE_site-a_TELEMETRY', {
      ...telemetry,
      subjects: [...telemetry.subjects, 'bsu.site-b.>'],
    });
    // BSU as an older version left it: the site's sources without a filter.
    const created = await ensureHubStream(jsm, limits(hub.url));
    await jsm.streams.update(HUB_STREAM, {
      ...created.config,
      sources: siteSources('site-a').map(({ filter_subject: _, ...source }) => source),
    });
    const js = jetstream(siteNc);
    await js.publish('bsu.site-a.u1.telemetry', 'a1');
    await js.publish('bsu.site-b.u1.telemetry', 'spoof1');
    await waitFor(
      'the unfiltered source to take both',
      async () => (await streamCount(hubNc, HUB_STREAM)) === 2,
    );

    await addSite(jsm, 'site-a', limits(hub.url));
    assert.deepEqual((await jsm.streams.info(HUB_STREAM)).config.sources, siteSources('site-a'));
    await js.publish('bsu.site-a.u1.telemetry', 'a2');
    await js.publish('bsu.site-b.u1.telemetry', 'spoof2');
    await js.publish('bsu.site-a.u1.telemetry', 'a3');
    const held = async () =>
      (await readStream(hubNc, HUB_STREAM)).map((m) => `${m.subject} ${Buffer.from(m.payload).toString()}`);
    await waitFor('site-a sourced on', async () => (await held()).at(-1) === 'bsu.site-a.u1.telemetry a3');
    assert.deepEqual(await held(), [
      'bsu.site-a.u1.telemetry a1',
      'bsu.site-b.u1.telemetry spoof1',
      'bsu.site-a.u1.telemetry a2',
      'bsu.site-a.u1.telemetry a3',
    ]);
  });
});
