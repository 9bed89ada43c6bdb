/**
 * `npm run bench -- sources [--sites 250,500,1000,...]`: what the number of sites alone costs one
 * hub stream. One hub nats-server; `BSU` gets each site's three sources through `addSite`, exactly
 * as `switchyard site add` does, but no site exists, so every source stays unconnected and retrying.
 * Per step it reports how long onboarding one more site takes, the hub's idle CPU and memory, and
 * the size of the stream's config (what each `site add` sends) and of its info (what `site list`
 * reads). It stops at the first refusal: past `max_payload`, the config can no longer be updated.
 */
import { jetstreamManager } from '@nats-io/jetstream';
import { addSite, siteSources } from '../cloud/hub-stream.ts';
import { describeError } from '../lib/errors.ts';
import { processCpuMs, processRssBytes } from '../lib/process.ts';
import { sleep } from '../lib/timers.ts';
import { HUB_STREAM } from '../schemas/streams.ts';
import { natsConnect } from '../test/support/jetstream.ts';
import { TestServers } from '../test/support/servers.ts';
import type { Figure } from './support/common.ts';

export interface HubSourcesBenchOptions {
  /** Site counts to measure at, ascending. */
  siteCounts: number[];
  /** Window the idle CPU is measured over at each step (s). */
  idleS: number;
  log: (line: string) => void;
}

const LIMITS = { hubMaxAgeS: 3600, hubMaxBytes: -1, hubDuplicateWindowS: 900 };
const siteName = (i: number): string => `site-${String(i).padStart(5, '0')}`;

export async function benchHubSources(options: HubSourcesBenchOptions): Promise<Figure[]> {
  const servers = new TestServers('bench-hub-sources');
  const figures: Figure[] = [];
  try {
    const hub = await servers.nats();
    const nc = await natsConnect(hub.url);
    const jsm = await jetstreamManager(nc, { timeout: 60_000 });
    let onboarded = 0;
    for (const target of options.siteCounts) {
      const stage = `hub sources, ${target} sites`;
      const figure = (name: string, value: number, unit: string, note?: string): void => {
        figures.push({ stage, name, value, unit, ...(note ? { note } : {}) });
      };
      const configBytes = Buffer.byteLength(
        JSON.stringify({
          sources: Array.from({ length: target }, (_, i) => siteSources(siteName(i))).flat(),
        }),
      );
      let lastAddMs = 0;
      try {
        for (; onboarded < target; onboarded++) {
          const started = performance.now();
          await addSite(jsm, siteName(onboarded), LIMITS);
          lastAddMs = performance.now() - started;
        }
      } catch (err) {
        options.log(`${stage}: site add refused at site ${onboarded + 1}: ${describeError(err)}`);
        figure('site add refused at', onboarded + 1, 'sites', describeError(err));
        break;
      }
      // Let the new sources make their first attempts before measuring the steady cost.
      await sleep(3000);
      const cpuBefore = processCpuMs(hub.pid);
      await sleep(options.idleS * 1000);
      const idlePct = ((processCpuMs(hub.pid) - cpuBefore) / (options.idleS * 1000)) * 100;
      const infoStarted = performance.now();
      const info = await nc.request(`$JS.API.STREAM.INFO.${HUB_STREAM}`, undefined, { timeout: 60_000 });
      const infoMs = performance.now() - infoStarted;
      const rssMiB = processRssBytes(hub.pid) / 2 ** 20;
      figure('sources', target * 3, 'sources');
      figure('site add, the last one', Math.round(lastAddMs), 'ms');
      figure('hub CPU, idle, every source unconnected', Number(idlePct.toFixed(1)), '% of a core');
      figure('hub memory', Math.round(rssMiB), 'MiB');
      figure('stream config (what site add sends)', Math.round(configBytes / 1024), 'KiB');
      figure('stream info (what site list reads)', Math.round(info.data.length / 1024), 'KiB');
      figure('stream info request', Math.round(infoMs), 'ms');
      options.log(
        `${stage}: site add ${Math.round(lastAddMs)} ms, idle ${idlePct.toFixed(1)} %, ${Math.round(rssMiB)} MiB, ` +
          `config ${Math.round(configBytes / 1024)} KiB, info ${Math.round(info.data.length / 1024)} KiB in ${Math.round(infoMs)} ms`,
      );
    }
    await nc.close();
  } finally {
    await servers.stopAll();
  }
  return figures;
}
