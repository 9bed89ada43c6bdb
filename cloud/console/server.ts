/**
 * The console's HTTP server (fastify): the pages, their JSON twins, the static assets (uPlot from
 * node_modules, no CDN), and /healthz, /readyz, /metrics. Read-only: only GET and HEAD are
 * answered. Every route but the three probes asks for the bearer token when one is configured,
 * either as `Authorization: Bearer <token>` or once as `?token=` in a browser, which sets an
 * HttpOnly cookie and redirects to the same page without it.
 */
import { createHash, timingSafeEqual } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { gzipSync } from 'node:zlib';
import { createRequire } from 'node:module';
import cookie from '@fastify/cookie';
import Fastify, { type FastifyInstance, type FastifyReply, type FastifyRequest } from 'fastify';
import { Counter, Histogram, type Registry } from 'prom-client';
import { describeError } from '../../lib/errors.ts';
import type { Logger } from '../../lib/log.ts';
import type { Readiness } from '../../lib/ops.ts';
import { isValidId } from '../../schemas/subjects.ts';
import { deadLettersMain, fleetMain, layout, Page, pipelineMain, siteMain } from './pages.ts';
import type { UnitSeries } from './series.ts';
import type { SnapshotSource, UnitRow } from './snapshot.ts';

/** The cookie a `?token=` login sets. */
export const SESSION_COOKIE = 'switchyard_console';
/** Routes that answer without the token: probes and metrics scrapers carry no credentials. */
export const OPEN_ROUTES: readonly string[] = ['/healthz', '/readyz', '/metrics'];

export interface ConsoleServerOptions {
  snapshots: SnapshotSource;
  /** Units of one site (the caller caches). */
  siteUnits(site: string): Promise<UnitRow[]>;
  /** SoC and W per unit of one site over `chartHours` (the caller caches). */
  siteSeries(site: string): Promise<UnitSeries[]>;
  /** Bearer token; empty: no check (an auth proxy in front, or a test setup). */
  token: string;
  refreshIntervalMs: number;
  chartHours: number;
  registry: Registry;
  readiness(): Readiness | Promise<Readiness>;
  log: Logger;
}

const require = createRequire(import.meta.url);
const asset = (name: string): string => readFileSync(new URL(`./assets/${name}`, import.meta.url), 'utf8');

/** Static files, read once: [content type, body]. */
function loadAssets(): Map<string, [string, string]> {
  return new Map([
    ['console.js', ['text/javascript; charset=utf-8', asset('console.js')]],
    ['console.css', ['text/css; charset=utf-8', asset('console.css')]],
    [
      'uplot.js',
      [
        'text/javascript; charset=utf-8',
        readFileSync(require.resolve('uplot/dist/uPlot.iife.min.js'), 'utf8'),
      ],
    ],
    [
      'uplot.css',
      ['text/css; charset=utf-8', readFileSync(require.resolve('uplot/dist/uPlot.min.css'), 'utf8')],
    ],
  ]);
}

/** What the cookie holds: a digest of the token, so the token itself never sits in a browser. */
const sessionValue = (token: string): string =>
  createHash('sha256').update(`switchyard-console-session\0${token}`).digest('base64url');

function sameSecret(given: string, expected: string): boolean {
  const a = createHash('sha256').update(given).digest();
  const b = createHash('sha256').update(expected).digest();
  return timingSafeEqual(a, b);
}

const SECURITY_HEADERS = {
  // uPlot sizes its elements through inline styles; scripts come from this server only.
  'content-security-policy':
    "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; frame-ancestors 'none'; base-uri 'none'; form-action 'none'",
  'x-content-type-options': 'nosniff',
  // A `?token=` URL must not leak through Referer.
  'referrer-policy': 'no-referrer',
  'x-frame-options': 'DENY',
} as const;

/** Builds the server (not listening yet). */
export async function buildConsoleServer(o: ConsoleServerOptions): Promise<FastifyInstance> {
  const app = Fastify({ logger: false, trustProxy: true });
  await app.register(cookie);
  const assets = loadAssets();
  const requests = new Counter({
    name: 'switchyard_console_requests_total',
    help: 'HTTP requests answered, by route and status',
    labelNames: ['route', 'status'],
    registers: [o.registry],
  });
  const seconds = new Histogram({
    name: 'switchyard_console_request_seconds',
    help: 'Time to answer a request, by route',
    labelNames: ['route'],
    buckets: [0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1, 5],
    registers: [o.registry],
  });
  const expectedSession = o.token ? sessionValue(o.token) : '';

  app.addHook('onRequest', async (req, reply) => {
    reply.headers(SECURITY_HEADERS);
    if (req.method !== 'GET' && req.method !== 'HEAD') {
      reply.header('allow', 'GET, HEAD');
      return reply.code(405).send({ error: 'the console is read-only: GET and HEAD only' });
    }
    const path = req.url.split('?')[0]!;
    if (!o.token || OPEN_ROUTES.includes(path)) return;
    const auth = req.headers.authorization ?? '';
    if (auth.startsWith('Bearer ') && sameSecret(auth.slice(7).trim(), o.token)) return;
    const query = req.query as Record<string, string | undefined>;
    if (typeof query.token === 'string' && sameSecret(query.token, o.token)) {
      const url = new URL(req.url, 'http://console');
      url.searchParams.delete('token');
      reply.setCookie(SESSION_COOKIE, expectedSession, {
        path: '/',
        httpOnly: true,
        sameSite: 'strict',
        secure: req.protocol === 'https',
      });
      return reply.redirect(`${url.pathname}${url.search}`, 303);
    }
    const session = req.cookies[SESSION_COOKIE];
    if (session && sameSecret(session, expectedSession)) return;
    reply.header('www-authenticate', 'Bearer realm="switchyard-console"');
    const wantsHtml = (req.headers.accept ?? '').includes('text/html');
    if (wantsHtml)
      return reply
        .code(401)
        .type('text/html; charset=utf-8')
        .send(
          '<!doctype html><title>Switchyard console</title><p>This console needs its token: open it as <code>?token=…</code> once, or send <code>Authorization: Bearer …</code>.</p>',
        );
    return reply.code(401).send({ error: 'token required: Authorization: Bearer <token>' });
  });

  app.addHook('onResponse', async (req, reply) => {
    const route = req.routeOptions.url ?? 'unmatched';
    requests.inc({ route, status: String(reply.statusCode) });
    seconds.observe({ route }, reply.elapsedTime / 1000);
  });

  app.setErrorHandler((err, req, reply) => {
    o.log.warn({ err: describeError(err), url: req.url.split('?')[0] }, 'request failed');
    void reply.code(500).send({ error: describeError(err) });
  });

  const html = (reply: FastifyReply, body: string): FastifyReply =>
    reply.type('text/html; charset=utf-8').header('cache-control', 'no-store').send(body);
  const json = (reply: FastifyReply, body: unknown): FastifyReply =>
    reply.header('cache-control', 'no-store').send(body);
  const partial = (req: FastifyRequest): boolean => (req.query as Record<string, string>).partial === '1';
  const page = (req: FastifyRequest, reply: FastifyReply, p: Page, title: string, main: string, extra = {}) =>
    html(
      reply,
      partial(req) ? main : layout({ title, page: p, main, refreshMs: o.refreshIntervalMs, ...extra }),
    );
  const siteParam = (req: FastifyRequest): string | undefined => {
    const site = (req.params as { site: string }).site;
    return isValidId(site) ? site : undefined;
  };

  app.get('/healthz', async (_req, reply) => json(reply, { status: 'ok' }));
  app.get('/readyz', async (_req, reply) => {
    const r = await o.readiness();
    return json(reply.code(r.ready ? 200 : 503), r);
  });
  app.get('/metrics', async (_req, reply) =>
    reply.type(o.registry.contentType).send(await o.registry.metrics()),
  );
  app.get('/assets/:name', async (req, reply) => {
    const found = assets.get((req.params as { name: string }).name);
    if (!found) return reply.code(404).send({ error: 'no such asset' });
    return reply.type(found[0]).header('cache-control', 'public, max-age=300').send(found[1]);
  });

  // The snapshot's pages are rendered and compressed once per snapshot, whatever the viewers.
  const rendered = new RenderCache();
  const shared = (
    req: FastifyRequest,
    reply: FastifyReply,
    key: string,
    snapshot: { takenAtMs: number },
    type: string,
    render: () => string,
  ): FastifyReply => {
    const { body, gzip } = rendered.get(`${key}${partial(req) ? ':partial' : ''}`, snapshot, render);
    reply.type(type).header('cache-control', 'no-store').header('vary', 'accept-encoding');
    if (!/\bgzip\b/.test(req.headers['accept-encoding'] ?? '')) return reply.send(body);
    return reply.header('content-encoding', 'gzip').send(gzip);
  };
  const sharedPage = (
    req: FastifyRequest,
    reply: FastifyReply,
    p: Page,
    title: string,
    snapshot: { takenAtMs: number },
    main: () => string,
  ) =>
    shared(req, reply, p, snapshot, 'text/html; charset=utf-8', () =>
      partial(req) ? main() : layout({ title, page: p, main: main(), refreshMs: o.refreshIntervalMs }),
    );
  const sharedJson = (
    req: FastifyRequest,
    reply: FastifyReply,
    key: string,
    snapshot: { takenAtMs: number },
  ) => shared(req, reply, key, snapshot, 'application/json; charset=utf-8', () => JSON.stringify(snapshot));

  app.get('/', async (req, reply) =>
    sharedPage(req, reply, Page.fleet, 'Fleet', o.snapshots.fleet, () => fleetMain(o.snapshots.fleet)),
  );
  app.get('/api/fleet', async (req, reply) => sharedJson(req, reply, 'api:fleet', o.snapshots.fleet));

  app.get('/sites/:site', async (req, reply) => {
    const site = siteParam(req);
    if (!site) return reply.code(404).send({ error: 'not a site id' });
    const units = await o.siteUnits(site);
    const fleet = o.snapshots.fleet;
    const row = fleet.sites.find((s) => s.site === site);
    const main = siteMain(site, row, units, Date.now(), o.chartHours);
    return page(req, reply, Page.site, `Site ${site}`, main, {
      headExtra:
        '<link rel="stylesheet" href="/assets/uplot.css">\n<script src="/assets/uplot.js" defer></script>',
      data: { site, chartHours: String(o.chartHours) },
    });
  });
  app.get('/api/sites/:site', async (req, reply) => {
    const site = siteParam(req);
    if (!site) return reply.code(404).send({ error: 'not a site id' });
    const row = o.snapshots.fleet.sites.find((s) => s.site === site) ?? null;
    return json(reply, { site, row, units: await o.siteUnits(site) });
  });
  app.get('/api/sites/:site/series', async (req, reply) => {
    const site = siteParam(req);
    if (!site) return reply.code(404).send({ error: 'not a site id' });
    return json(reply, { site, hours: o.chartHours, units: await o.siteSeries(site) });
  });

  app.get('/pipeline', async (req, reply) =>
    sharedPage(req, reply, Page.pipeline, 'Pipeline', o.snapshots.pipeline, () =>
      pipelineMain(o.snapshots.pipeline),
    ),
  );
  app.get('/api/pipeline', async (req, reply) =>
    sharedJson(req, reply, 'api:pipeline', o.snapshots.pipeline),
  );
  app.get('/dead-letters', async (req, reply) =>
    sharedPage(req, reply, Page.deadLetters, 'Dead letters', o.snapshots.deadLetters, () =>
      deadLettersMain(o.snapshots.deadLetters),
    ),
  );
  app.get('/api/dead-letters', async (req, reply) =>
    sharedJson(req, reply, 'api:dead-letters', o.snapshots.deadLetters),
  );
  return app;
}

/**
 * The last rendering of each page, as text and gzipped, kept while its snapshot is the current one
 * (same object): one render and one compression per snapshot and page, shared by every viewer.
 */
export class RenderCache {
  private readonly entries = new Map<string, { snapshot: object; body: string; gzip: Buffer }>();

  get(key: string, snapshot: object, render: () => string): { body: string; gzip: Buffer } {
    const hit = this.entries.get(key);
    if (hit?.snapshot === snapshot) return hit;
    const body = render();
    const entry = { snapshot, body, gzip: gzipSync(body, { level: 6 }) };
    this.entries.set(key, entry);
    return entry;
  }
}

/**
 * A per-key cache of one value each, kept `ttlMs`, at most `maxEntries` keys (the oldest dropped
 * first): concurrent viewers of one site share one read.
 */
export class TtlCache<T> {
  private readonly entries = new Map<string, { atMs: number; value: Promise<T> }>();

  constructor(
    private readonly ttlMs: number,
    private readonly maxEntries: number,
    private readonly load: (key: string) => Promise<T>,
  ) {}

  get(key: string): Promise<T> {
    const now = Date.now();
    const hit = this.entries.get(key);
    if (hit && now - hit.atMs < this.ttlMs) return hit.value;
    const value = this.load(key);
    // A failed read is not kept: the next viewer tries again.
    value.catch(() => this.entries.delete(key));
    this.entries.delete(key);
    this.entries.set(key, { atMs: now, value });
    while (this.entries.size > this.maxEntries) this.entries.delete(this.entries.keys().next().value!);
    return value;
  }
}
