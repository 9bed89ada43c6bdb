/**
 * `switchyard console` against real servers: a hub with two sites, each behind a cuttable link,
 * with its broker, bridge and devices; Redis with the monitor consumer, VictoriaMetrics with the
 * ingest consumer; the console with a token and short intervals, looked at in a real browser
 * (Debian's chromium, headless, driven by puppeteer-core). What the pages show is compared with what
 * reached Redis. Screenshots of every page go to SWITCHYARD_TEST_OUTPUT/console (default: the
 * system temp directory).
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, mkdirSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { jetstreamManager } from '@nats-io/jetstream';
import type { NatsConnection } from '@nats-io/transport-node';
import puppeteer, { type Browser, type Page } from 'puppeteer-core';
import { createClient, type RedisClientType } from 'redis';
import type { FleetSnapshot } from '../cloud/console/snapshot.ts';
import { addSite, pauseSite, resumeSite } from '../cloud/hub-stream.ts';
import { monitorKeys } from '../cloud/monitor/keys.ts';
import { switchyardEnv } from '../lib/env.ts';
import { freePort } from '../lib/process.ts';
import type { RunningServer } from '../stack/server-process.ts';
import { writeCloudEnv } from './support/consumers.ts';
import { DevicePublisher, startBridge, SteadyLoad, type BridgeProcess } from './support/edge.ts';
import { natsConnect } from './support/jetstream.ts';
import { startSwitchyard, type SwitchyardProcess } from './support/process.ts';
import { TestServers, waitFor } from './support/servers.ts';

const CHROMIUM = '/usr/bin/chromium';
const SITES = ['site-1', 'site-2'];
const DEVICES = 4;
/** Messages per second from each site's devices. */
const RATE_PER_S = 20;
const REFRESH_MS = 1_000;
const STALE_AFTER_MS = 4_000;
const TOKEN = 'console-test-token';

/** Reads the fleet table of a document in the browser: one TableRow per site row. */
const READ_FLEET_TABLE = `(root) => [...root.querySelectorAll('#fleet tbody tr.site')].map((r) => {
  const n = (cls) => Number(r.querySelector('td.' + cls).dataset.sort);
  const status = ['ok', 'lagging', 'silent'].find((s) => r.classList.contains(s)) ?? '';
  return { site: r.dataset.site, status, units: n('units'), online: n('online'), offline: n('offline'), faulted: n('faulted') };
})`;

/** What one row of the fleet table says, read from the page. */
interface TableRow {
  site: string;
  status: string;
  units: number;
  online: number;
  offline: number;
  faulted: number;
}

describe('switchyard console', { skip: !existsSync(CHROMIUM) && 'chromium is not installed' }, () => {
  const servers = new TestServers('console');
  const shots = join(
    switchyardEnv().SWITCHYARD_TEST_OUTPUT ?? join(tmpdir(), 'switchyard-test-output'),
    'console',
  );
  const links = new Map<string, RunningServer>();
  const bridges: BridgeProcess[] = [];
  const consumers: SwitchyardProcess[] = [];
  const publishers: DevicePublisher[] = [];
  const loads: SteadyLoad[] = [];
  let hub: NatsConnection | undefined;
  let consoleProcess: SwitchyardProcess | undefined;
  let browser: Browser | undefined;
  let redis: RedisClientType | undefined;
  let url = '';
  const pageErrors: string[] = [];

  /** A browser tab that records every console error, page error and failed request. */
  async function newPage(): Promise<Page> {
    const page = await browser!.newPage();
    await page.setViewport({ width: 1280, height: 800 });
    page.on('console', (m) => {
      if (m.type() === 'error') pageErrors.push(`${page.url()}: console: ${m.text()}`);
    });
    page.on('pageerror', (err) => pageErrors.push(`${page.url()}: ${String(err)}`));
    page.on('requestfailed', (r) => pageErrors.push(`${r.url()}: ${r.failure()?.errorText ?? 'failed'}`));
    page.on('response', (r) => {
      if (r.status() >= 400) pageErrors.push(`${r.url()}: HTTP ${r.status()}`);
    });
    return page;
  }

  /** Runs `source` (a JavaScript expression) in the page: the project compiles without DOM types. */
  const inPage = <T>(page: Page, source: string): Promise<T> => page.evaluate(source) as Promise<T>;
  const tableRows = (page: Page): Promise<TableRow[]> => inPage(page, `(${READ_FLEET_TABLE})(document)`);

  before(async () => {
    mkdirSync(shots, { recursive: true });
    const first = await servers.hubAndSite(SITES[0]);
    const second = await servers.hubAndSite(SITES[1], first);
    links.set(SITES[0]!, first.link);
    links.set(SITES[1]!, second.link);
    const [redisServer, vm, ...brokers] = await Promise.all([
      servers.redis(),
      servers.victoriaMetrics(),
      ...SITES.map(() => servers.mosquitto()),
    ]);
    hub = await natsConnect(first.hub.url);
    const jsm = await jetstreamManager(hub);
    for (const site of SITES)
      await addSite(jsm, site, { hubMaxAgeS: 3600, hubMaxBytes: -1, hubDuplicateWindowS: 900 });
    // One at a time: on a busy machine several starting at once may miss startBridge's deadline.
    for (const [i, site] of [first.site, second.site].entries())
      bridges.push(await startBridge({ site: SITES[i]!, mqttUrl: brokers[i]!.url, natsUrl: site.url }));
    const common = { SWITCHYARD_NATS_URL: first.hub.url, SWITCHYARD_LOG_LEVEL: 'warn' };
    const opsUrls: string[] = [];
    const consumerEnv: [string, Record<string, string>][] = [
      ['monitor', { SWITCHYARD_REDIS_URL: redisServer!.url }],
      [
        'ingest',
        { SWITCHYARD_SINK: 'influx2', SWITCHYARD_INFLUX2_URL: vm!.url, SWITCHYARD_INFLUX2_TOKEN: 'local' },
      ],
    ];
    for (const [name, env] of consumerEnv) {
      const opsPort = await freePort();
      consumers.push(startSwitchyard([name], { ...common, ...env, SWITCHYARD_OPS_PORT: String(opsPort) }));
      opsUrls.push(`http://127.0.0.1:${opsPort}`);
    }
    for (const broker of brokers) {
      const publisher = await DevicePublisher.connect(broker.url);
      publishers.push(publisher);
      const devices = Array.from({ length: DEVICES }, (_, d) => `bsu-${d + 1}`);
      loads.push(new SteadyLoad(publisher, devices, RATE_PER_S));
    }
    // The console reads an env file, as it reads the one `stack up` writes for the consumers.
    const envFile = writeCloudEnv(join(servers.dir, 'cloud.env'), {
      natsUrl: first.hub.url,
      redisUrl: redisServer!.url,
      sink: 'influx2',
      influx2Url: vm!.url,
    });
    consoleProcess = startSwitchyard(
      [
        'console',
        ...['--env-file', envFile, '--port', '0', '--ops-port', '0'],
        ...['--refresh-interval-ms', String(REFRESH_MS), '--counts-interval-ms', '2000'],
        ...['--stale-after-ms', String(STALE_AFTER_MS), '--chart-hours', '0.1'],
      ],
      { SWITCHYARD_CONSOLE_TOKEN: TOKEN },
    );
    const c = consoleProcess;
    url = await waitFor(
      'the console to listen',
      () => {
        if (c.child.exitCode !== null) throw new Error(`console exited:\n${c.output()}`);
        const line = c
          .output()
          .split('\n')
          .find((l) => l.includes('"console listening"'));
        return line ? (JSON.parse(line) as { url: string }).url : undefined;
      },
      20_000,
      100,
    );
    await waitFor(
      'the consumers to be ready',
      async () => {
        for (const ops of opsUrls)
          if (!(await fetch(`${ops}/readyz`).catch(() => undefined))?.ok) return false;
        return true;
      },
      30_000,
      200,
    );
    redis = createClient({ url: redisServer!.url }) as RedisClientType;
    await redis.connect();
    browser = await puppeteer.launch({
      executablePath: CHROMIUM,
      headless: true,
      // As root (CI) chromium refuses to start sandboxed.
      args: ['--no-sandbox', '--disable-gpu', '--disable-dev-shm-usage'],
    });
  });

  after(async () => {
    await browser?.close().catch(() => undefined);
    await redis?.quit().catch(() => undefined);
    await consoleProcess?.stop();
    await Promise.all(loads.map((l) => l.stop()));
    await Promise.all(publishers.map((p) => p.close()));
    await Promise.all([...consumers, ...bridges].map((p) => p.stop()));
    await hub?.close();
    await servers.stopAll();
  });

  test('refuses requests without the token, except the probes', async () => {
    assert.equal((await fetch(`${url}/api/fleet`)).status, 401);
    const html = await fetch(`${url}/`, { headers: { accept: 'text/html' } });
    assert.equal(html.status, 401);
    assert.match(html.headers.get('www-authenticate') ?? '', /^Bearer/);
    assert.equal(
      (await fetch(`${url}/api/fleet`, { headers: { authorization: 'Bearer wrong' } })).status,
      401,
    );
    for (const open of ['/healthz', '/metrics'])
      assert.equal((await fetch(`${url}${open}`)).status, 200, open);
    const bearer = { authorization: `Bearer ${TOKEN}` };
    assert.equal((await fetch(`${url}/api/fleet`, { headers: bearer })).status, 200);
    // Read-only: nothing but GET and HEAD.
    const post = await fetch(`${url}/api/fleet`, { method: 'POST', headers: bearer });
    assert.equal(post.status, 405);
  });

  test('the fleet table shows every site with the unit counts that reached Redis, as /api/fleet', async () => {
    const page = await newPage();
    const t0 = performance.now();
    // The login link sets the cookie and redirects to the page itself.
    await page.goto(`${url}/?token=${TOKEN}`, { waitUntil: 'load' });
    const loadMs = performance.now() - t0;
    assert.equal(new URL(page.url()).search, '', 'the token is gone from the address');
    const keys = monitorKeys();
    const rows = await waitFor(
      'every unit of every site in the table',
      async () => {
        await page.reload({ waitUntil: 'load' });
        const rows = await tableRows(page);
        return rows.length === SITES.length && rows.every((r) => r.units === DEVICES) ? rows : undefined;
      },
      45_000,
      1_000,
    );
    assert.deepEqual(
      rows.map((r) => r.site),
      SITES,
    );
    for (const row of rows) {
      assert.equal(await redis!.zCard(keys.siteLastSeen(row.site)), row.units, `${row.site}: units in Redis`);
      assert.equal(row.online + row.offline + row.faulted, row.units, `${row.site}: every unit counted once`);
    }
    // The table and the API from one snapshot: read both until they name the same one.
    const same = await waitFor(
      'the table and /api/fleet of one snapshot',
      () =>
        inPage<{ table: TableRow[]; api: FleetSnapshot } | null>(
          page,
          `(async () => {
            const api = await (await fetch('/api/fleet')).json();
            const html = await (await fetch('/?partial=1')).text();
            const doc = new DOMParser().parseFromString('<main>' + html + '</main>', 'text/html');
            const read = /read (\\S+) in/.exec(doc.querySelector('.totals').textContent)?.[1];
            if (!read || Date.parse(read) !== api.takenAtMs) return null;
            return { table: (${READ_FLEET_TABLE})(doc), api };
          })()`,
        ).then((r) => r ?? undefined),
      10_000,
      200,
    );
    assert.deepEqual(
      same.table,
      same.api.sites.map(({ site, status, units, online, offline, faulted }) => ({
        site,
        status,
        units,
        online,
        offline,
        faulted,
      })),
    );
    await page.screenshot({ path: join(shots, 'fleet.png'), fullPage: true });
    await page.close();
    process.stdout.write(`# fleet page loaded in ${loadMs.toFixed(0)} ms\n`);
  });

  test('a site whose link is cut turns silent on the open page, without a reload', async () => {
    const page = await newPage();
    await page.goto(`${url}/?token=${TOKEN}`, { waitUntil: 'load' });
    const statusOf = async (site: string) => (await tableRows(page)).find((r) => r.site === site)?.status;
    await waitFor('site-2 to be ok', async () => (await statusOf('site-2')) === 'ok', 20_000, 250);
    // As `switchyard stack cut-link` does: the link drops every connection and refuses new ones.
    process.kill(links.get('site-2')!.pid, 'SIGUSR1');
    const cutAt = performance.now();
    try {
      await waitFor(
        'site-2 to turn silent',
        async () => (await statusOf('site-2')) === 'silent',
        STALE_AFTER_MS + 4 * REFRESH_MS + 3_000,
        100,
      );
      const staleMs = performance.now() - cutAt;
      assert.equal(await statusOf('site-1'), 'ok', 'the other site is unaffected');
      process.stdout.write(`# site-2 silent ${staleMs.toFixed(0)} ms after its link was cut\n`);
      await page.screenshot({ path: join(shots, 'fleet-site-cut.png'), fullPage: true });
    } finally {
      process.kill(links.get('site-2')!.pid, 'SIGUSR2');
      await page.close();
    }
  });

  test('a site paused at the hub says so in the fleet, and is ok again once resumed', async () => {
    const jsm = await jetstreamManager(hub!);
    const fleetRow = async (site: string) => {
      const fleet = (await (
        await fetch(`${url}/api/fleet`, { headers: { authorization: `Bearer ${TOKEN}` } })
      ).json()) as { sites: { site: string; status: string; reasons: string[] }[] };
      return fleet.sites.find((r) => r.site === site);
    };
    const ok = async (site: string) => (await fleetRow(site))?.status === 'ok';
    // site-2 may still be coming back from the cut of the test before.
    await waitFor('both sites ok', async () => (await ok('site-1')) && (await ok('site-2')), 30_000, 250);
    assert.ok(await pauseSite(hub!, jsm, 'site-1'));
    try {
      await waitFor(
        'the pause in the fleet',
        async () =>
          (await fleetRow('site-1'))?.reasons.includes('paused at the hub (switchyard site resume)'),
        4 * REFRESH_MS + 3_000,
        100,
      );
      assert.equal((await fleetRow('site-2'))?.status, 'ok', 'the other site is unaffected');
    } finally {
      assert.ok(await resumeSite(hub!, jsm, 'site-1'));
    }
    await waitFor('site-1 ok again', () => ok('site-1'), 20_000, 250);
  });

  test("the site page lists the units and plots each unit's SoC and power", async () => {
    const page = await newPage();
    await page.goto(`${url}/sites/site-1?token=${TOKEN}`, { waitUntil: 'load' });
    const devices = await inPage<string[]>(
      page,
      `[...document.querySelectorAll('#units tbody tr.unit')].map((r) => r.dataset.device)`,
    );
    assert.equal(devices.length, DEVICES);
    // The chart reads the engine, which holds what ingest wrote a second or more ago.
    const points = await waitFor(
      'a chart with points',
      async () => {
        const n = await inPage<number[]>(
          page,
          `[...document.querySelectorAll('#charts .chart')].map((c) => Number(c.dataset.points))`,
        );
        if (n.some((p) => p > 0)) return n;
        await page.reload({ waitUntil: 'load' });
        return undefined;
      },
      30_000,
      1_000,
    );
    assert.ok(points.some((p) => p > 0));
    assert.ok((await page.$$('#charts canvas')).length > 0, 'uPlot drew on a canvas');
    await page.screenshot({ path: join(shots, 'site.png'), fullPage: true });
    await page.close();
  });

  test('the pipeline page shows each consumer; the dead-letter page lists the stream', async () => {
    const page = await newPage();
    await page.goto(`${url}/pipeline?token=${TOKEN}`, { waitUntil: 'load' });
    const durables = await waitFor(
      'the consumers with their presence',
      async () => {
        const rows = await inPage<string[]>(
          page,
          `[...document.querySelectorAll('#consumers tbody tr[data-durable]')].map((r) => r.dataset.durable)`,
        );
        return rows.length >= 2 ? rows : undefined;
      },
      10_000,
      250,
    );
    assert.ok(durables.includes('monitor'), 'monitor');
    assert.ok(
      durables.some((d) => d.startsWith('ingest')),
      'ingest',
    );
    await page.screenshot({ path: join(shots, 'pipeline.png'), fullPage: true });
    await page.goto(`${url}/dead-letters`, { waitUntil: 'load' });
    assert.ok(await page.$('#dead-letters'));
    await page.screenshot({ path: join(shots, 'dead-letters.png'), fullPage: true });
    await page.close();
  });

  test('no page logged an error', () => {
    assert.deepEqual(pageErrors, []);
  });
});
