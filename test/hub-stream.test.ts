/** Onboarding against a real hub nats-server: what `site add/remove` change in BSU, and what not. */
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { jetstreamManager, type JetStreamManager } from '@nats-io/jetstream';
import type { NatsConnection } from '@nats-io/transport-node';
import { addSite, ensureHubStream, listSites, removeSite, siteSources } from '../cloud/hub-stream.ts';
import { HUB_STREAM } from '../schemas/streams.ts';
import { natsConnect } from './support/jetstream.ts';
import { TestServers } from './support/servers.ts';

const HOUR_S = 3600;

describe('hub stream onboarding', () => {
  const servers = new TestServers('hub-stream');
  let nc: NatsConnection;
  let jsm: JetStreamManager;
  let natsUrl: string;

  before(async () => {
    natsUrl = (await servers.nats()).url;
    nc = await natsConnect(natsUrl);
    jsm = await jetstreamManager(nc);
  });
  after(async () => {
    await nc?.close();
    await servers.stopAll();
  });

  test('site add sources both site streams over the leaf with a per-site deliver prefix, once', async () => {
    const config = { natsUrl, hubMaxAgeS: 2 * HOUR_S, hubMaxBytes: -1, hubDuplicateWindowS: 600 };
    await addSite(jsm, 'site-a', config);
    await addSite(jsm, 'site-a', config);
    const info = await jsm.streams.info(HUB_STREAM);
    assert.deepEqual(info.config.sources, siteSources('site-a'));
    assert.deepEqual(
      info.config.sources?.map((s) => [s.name, s.external?.api, s.external?.deliver]),
      [
        ['SITE_site-a_TELEMETRY', '$JS.site-a.API', 'deliver.site-a'],
        ['SITE_site-a_EVENTS', '$JS.site-a.API', 'deliver.site-a'],
      ],
    );
    assert.equal(info.config.max_age, 2 * HOUR_S * 1e9);
  });

  test('site add leaves the limits an operator set on BSU alone', async () => {
    await ensureHubStream(jsm, {
      natsUrl,
      hubMaxAgeS: 5 * HOUR_S,
      hubMaxBytes: 1024 ** 3,
      hubDuplicateWindowS: 300,
    });
    await addSite(jsm, 'site-b', { natsUrl, hubMaxAgeS: HOUR_S, hubMaxBytes: -1, hubDuplicateWindowS: 900 });
    const { config } = await jsm.streams.info(HUB_STREAM);
    assert.equal(config.max_age, 5 * HOUR_S * 1e9);
    assert.equal(config.max_bytes, 1024 ** 3);
    assert.equal(config.duplicate_window, 300 * 1e9);
    assert.deepEqual(
      (await listSites(jsm)).map((s) => s.site),
      ['site-a', 'site-b'],
    );
  });

  test('site remove stops sourcing one site and keeps the others', async () => {
    assert.equal(await removeSite(jsm, 'site-a'), true);
    assert.equal(await removeSite(jsm, 'site-a'), false);
    const { config } = await jsm.streams.info(HUB_STREAM);
    assert.deepEqual(config.sources, siteSources('site-b'));
  });
});
