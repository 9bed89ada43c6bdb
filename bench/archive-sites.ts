/**
 * `npm run bench -- archive-sites [--sites 10,100,1000]`: the archive draining the same number of
 * messages from fleets of different sizes, in each layout. The `batch` layout writes one object
 * per hour of each batch whatever the fleet; the `site` layout one per site and hour, so the more
 * sites a batch spans, the fewer messages each of its objects holds and the more S3 requests every
 * message costs. Each step has its own nats-server and s3rver.
 */
import { archiveConsumer } from '../cloud/archive/consumer.ts';
import { ArchiveLayout } from '../cloud/archive/layout.ts';
import { createS3Client, listManifests } from '../cloud/archive/s3.ts';
import { natsConnect } from '../test/support/jetstream.ts';
import { s3rverSettings, TestServers } from '../test/support/servers.ts';
import type { Figure } from './support/common.ts';
import { archiveSettings, drainWithConsumer, fleetMessages, preloadHubStream } from './support/consumers.ts';

export interface ArchiveSitesBenchOptions {
  siteCounts: number[];
  /** Messages per step; the fleet has this many units in all, spread over the sites. */
  messages: number;
  log: (line: string) => void;
}

/** Units in every fleet: as many per site as divide it evenly (1 at 1,000 sites). */
const UNITS = 1000;

export async function benchArchiveSites(options: ArchiveSitesBenchOptions): Promise<Figure[]> {
  const figures: Figure[] = [];
  const { batchSize } = archiveConsumer.runnerDefaults;
  for (const sites of options.siteCounts)
    for (const layout of [ArchiveLayout.batch, ArchiveLayout.site]) {
      const servers = new TestServers('bench-archive-sites');
      try {
        const [nats, s3] = await Promise.all([servers.nats(), servers.s3()]);
        const nc = await natsConnect(nats.url);
        const devicesPerSite = Math.max(1, Math.floor(UNITS / sites));
        await preloadHubStream(
          nc,
          fleetMessages(options.messages, { sites, devicesPerSite, seed: 11, detailEvery: 0 }),
        );
        await nc.close();
        const drain = await drainWithConsumer({
          command: 'archive',
          settings: { ...archiveSettings(nats, s3), s3Layout: layout },
          messages: options.messages,
          everyMs: 50,
          timeoutMs: 900_000,
        });
        const client = createS3Client(s3rverSettings(s3));
        const objects = (await listManifests(client, 'switchyard', '')).length;
        client.destroy();
        const perObject = options.messages / objects;
        const stage = `archive, ${sites} sites, ${layout} layout`;
        const note =
          `${objects} objects (each with its manifest) for ${options.messages} messages in batches of ${batchSize}: ` +
          `${perObject.toFixed(1)} messages per object, ${((2 * objects) / options.messages).toFixed(3)} PUTs per message`;
        figures.push(
          { stage, name: 'archive throughput', value: Math.round(drain.messages.rate), unit: 'msgs/s', note },
          {
            stage,
            name: 'archive CPU per message',
            value: Math.round(drain.cpuUsPerMessage * 10) / 10,
            unit: 'µs',
          },
          {
            stage,
            name: 'messages per archive object',
            value: Math.round(perObject * 10) / 10,
            unit: 'msgs',
          },
        );
        options.log(
          `${stage}: ${Math.round(drain.messages.rate)} msgs/s, ${drain.cpuUsPerMessage.toFixed(1)} µs/msg; ${note}`,
        );
      } finally {
        await servers.stopAll();
      }
    }
  return figures;
}
