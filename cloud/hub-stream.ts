/**
 * The hub stream `BSU` and site onboarding. `BSU` has no subjects of its own: it *sources* every
 * site's streams over the leaf link (`external.api = $JS.<site>.API`), so after an uplink outage
 * JetStream itself catches up from the last sequence it sourced. Adding or removing a site is a
 * stream update: the hub never restarts.
 */
import {
  DiscardPolicy,
  RetentionPolicy,
  StorageType,
  type JetStreamManager,
  type StreamConfig,
  type StreamInfo,
  type StreamSource,
} from '@nats-io/jetstream';
import { Kvm, type KV } from '@nats-io/kv';
import { InvalidArgumentError, type NatsConnection } from '@nats-io/transport-node';
import Type, { type Static } from 'typebox';
import { isStreamNotFound, NatsAuthSchema, withReplicaHint } from '../lib/nats.ts';
import { InsecureSchema } from '../lib/secure.ts';
import { CONTROL_BUCKET, controlBucket } from './control.ts';
import { SUBJECT_ROOT } from '../schemas/subjects.ts';
import {
  HUB_STREAM,
  siteApiPrefix,
  siteDeliverPrefix,
  siteOfStream,
  siteStreamNames,
} from '../schemas/streams.ts';

const nanos = (seconds: number): number => seconds * 1_000_000_000;

export const HubStreamConfigSchema = Type.Object({
  natsUrl: Type.String({ default: 'nats://127.0.0.1:4222', description: 'The hub nats-server' }),
  ...NatsAuthSchema.properties,
  ...InsecureSchema.properties,
  hubMaxAgeS: Type.Integer({
    minimum: 60,
    default: 90 * 24 * 3600,
    description: 'Retention of the hub stream (s)',
  }),
  hubMaxBytes: Type.Integer({
    minimum: -1,
    default: -1,
    description: "Disk budget of the hub stream (bytes; -1: the server's JetStream limit)",
  }),
  hubDuplicateWindowS: Type.Integer({
    minimum: 1,
    default: 900,
    description: 'De-duplication window of the hub stream (s), by Nats-Msg-Id',
  }),
  hubReplicas: Type.Integer({
    minimum: 1,
    maximum: 5,
    default: 1,
    description:
      'Copies of the hub stream on a clustered hub (3 in production: one node may fail); 1 on a single server',
  }),
});
export type HubStreamConfig = Static<typeof HubStreamConfigSchema>;
/** The limits of `BSU` within a HubStreamConfig. */
export type HubStreamLimits = Pick<HubStreamConfig, 'hubMaxAgeS' | 'hubMaxBytes' | 'hubDuplicateWindowS'> &
  Partial<Pick<HubStreamConfig, 'hubReplicas'>>;

/**
 * The sources that bring one site's streams (telemetry, events, invalid) into `BSU`. Each takes
 * only the site's own subjects (`bsu.<site>.>`): whatever else a site's stream holds, it can never
 * place data under another site's name.
 */
export function siteSources(site: string): StreamSource[] {
  const external = { api: siteApiPrefix(site), deliver: siteDeliverPrefix(site) };
  const filter_subject = `${SUBJECT_ROOT}.${site}.>`;
  return Object.values(siteStreamNames(site)).map((name) => ({ name, external, filter_subject }));
}

const sameSource = (a: StreamSource, b: StreamSource): boolean =>
  a.name === b.name &&
  (a.filter_subject ?? '') === (b.filter_subject ?? '') &&
  a.external?.api === b.external?.api &&
  a.external?.deliver === b.external?.deliver;

function hubStreamConfig(config: HubStreamLimits, sources: StreamSource[]): StreamConfig {
  return {
    name: HUB_STREAM,
    description: 'Switchyard: every site, sourced over the leaf links',
    retention: RetentionPolicy.Limits,
    storage: StorageType.File,
    discard: DiscardPolicy.Old,
    max_age: nanos(config.hubMaxAgeS),
    max_bytes: config.hubMaxBytes,
    duplicate_window: nanos(config.hubDuplicateWindowS),
    num_replicas: config.hubReplicas ?? 1,
    sources,
  } as StreamConfig;
}

async function hubInfo(jsm: JetStreamManager): Promise<StreamInfo | undefined> {
  try {
    return await jsm.streams.info(HUB_STREAM);
  } catch (err) {
    if (isStreamNotFound(err)) return undefined;
    throw err;
  }
}

/**
 * Creates `BSU` (with no sites) or updates its limits and replicas, keeping its sources. A clustered
 * hub (2.9+) changes the replica count of a live stream in place: new copies catch up from the others.
 */
export async function ensureHubStream(jsm: JetStreamManager, config: HubStreamLimits): Promise<StreamInfo> {
  const info = await hubInfo(jsm);
  // Without a setting, an existing BSU keeps its replica count.
  const replicas = config.hubReplicas ?? info?.config.num_replicas ?? 1;
  const wanted = hubStreamConfig({ ...config, hubReplicas: replicas }, info?.config.sources ?? []);
  return withReplicaHint(
    HUB_STREAM,
    'hubReplicas',
    replicas,
    info ? jsm.streams.update(HUB_STREAM, wanted) : jsm.streams.add(wanted),
  );
}

/**
 * Sources `site` into `BSU`, creating `BSU` with `config`'s limits if it does not exist yet. The
 * limits of an existing `BSU` are left as they are: onboarding a site must not undo what an
 * operator set (`ensureHubStream` changes them deliberately). Idempotent.
 */
export async function addSite(
  jsm: JetStreamManager,
  site: string,
  config: HubStreamLimits,
): Promise<StreamInfo> {
  const info = (await hubInfo(jsm)) ?? (await ensureHubStream(jsm, config));
  const current = info.config.sources ?? [];
  const wanted = siteSources(site);
  if (wanted.every((w) => current.some((c) => sameSource(c, w)))) return info;
  // A source of an older version (no filter) is replaced; JetStream resumes it where it was.
  const others = current.filter((c) => !wanted.some((w) => w.name === c.name));
  const updated = { ...info.config, sources: [...others, ...wanted] };
  try {
    return await jsm.streams.update(HUB_STREAM, updated);
  } catch (err) {
    // The client refuses a request larger than the server's max_payload before sending it.
    if (err instanceof InvalidArgumentError) throw new HubStreamFullError(site, updated, { cause: err });
    throw err;
  }
}

/** `BSU`'s sources no longer fit one stream update: the hub needs another stream (docs/scale.md). */
export class HubStreamFullError extends Error {
  override name = 'HubStreamFullError';
  constructor(site: string, config: StreamConfig, options?: ErrorOptions) {
    const sites = (config.sources ?? []).length / Object.keys(siteStreamNames(site)).length;
    const kib = Math.round(Buffer.byteLength(JSON.stringify(config)) / 1024);
    super(
      `cannot add ${site}: ${HUB_STREAM} would source ${sites} sites, a ${kib} KiB stream config, ` +
        `larger than the hub's max_payload (see docs/scale.md)`,
      options,
    );
  }
}

/** The control-bucket key of a paused site. */
const pauseKey = (site: string): string => `pause.${site}`;

/** The pause recorded for `site`, if any. */
async function readPause(kv: KV, site: string): Promise<SitePause | undefined> {
  const entry = await kv.get(pauseKey(site));
  return entry?.operation === 'PUT' ? entry.json<SitePause>() : undefined;
}

/** Is `site` paused (`pauseSite`)? One read, for a command about one site; no bucket, no pause. */
export async function isSitePaused(nc: NatsConnection, site: string): Promise<boolean> {
  const kv = await new Kvm(nc).open(CONTROL_BUCKET);
  return readPause(kv, site).then(
    (pause) => pause !== undefined,
    (err: unknown) => {
      if (isStreamNotFound(err)) return false;
      throw err;
    },
  );
}

/** The names of `site`'s streams, as BSU's sources name them. */
const streamNamesOf = (site: string): Set<string> => new Set(Object.values(siteStreamNames(site)));

/**
 * Stops sourcing `site` (and, with `nc`, forgets its pause); what `BSU` already holds stays. Returns
 * false if it was neither sourced nor paused.
 */
export async function removeSite(jsm: JetStreamManager, site: string, nc?: NatsConnection): Promise<boolean> {
  let paused = false;
  if (nc) {
    const kv = await controlBucket(nc);
    paused = (await readPause(kv, site)) !== undefined;
    if (paused) await kv.delete(pauseKey(site));
  }
  const info = await hubInfo(jsm);
  const current = info?.config.sources ?? [];
  const names = streamNamesOf(site);
  const kept = current.filter((s) => !names.has(s.name));
  if (!info || kept.length === current.length) return paused;
  await jsm.streams.update(HUB_STREAM, { ...info.config, sources: kept });
  return true;
}

/** A paused site: the sources BSU had for it, kept in the control bucket until it is resumed. */
export interface SitePause {
  site: string;
  pausedAt: string;
  sources: StreamSource[];
}

/** The sites paused now, by site (none before the control bucket exists). */
export async function pausedSites(nc: NatsConnection): Promise<Map<string, SitePause>> {
  const out = new Map<string, SitePause>();
  const kv = await new Kvm(nc).open(CONTROL_BUCKET);
  let keys: AsyncIterable<string>;
  try {
    keys = await kv.keys('pause.*');
  } catch (err) {
    if (isStreamNotFound(err)) return out;
    throw err;
  }
  for await (const key of keys) {
    const entry = await kv.get(key);
    if (entry?.operation === 'PUT') {
      const pause = entry.json<SitePause>();
      out.set(pause.site, pause);
    }
  }
  return out;
}

/**
 * Stops sourcing `site` for now (a site flooding the hub: docs/hub.md): its readings stay in its
 * own streams, within its own budgets. Its sources are recorded first, so that `resumeSite` puts
 * back exactly what was there. Returns false if `site` is neither sourced nor paused.
 */
export async function pauseSite(nc: NatsConnection, jsm: JetStreamManager, site: string): Promise<boolean> {
  const kv = await controlBucket(nc);
  const info = await hubInfo(jsm);
  const names = streamNamesOf(site);
  const current = info?.config.sources ?? [];
  const mine = current.filter((s) => names.has(s.name));
  if (!info || mine.length === 0) return (await readPause(kv, site)) !== undefined;
  const pause: SitePause = { site, pausedAt: new Date().toISOString(), sources: mine };
  await kv.put(pauseKey(site), JSON.stringify(pause));
  await jsm.streams.update(HUB_STREAM, {
    ...info.config,
    sources: current.filter((s) => !names.has(s.name)),
  });
  return true;
}

/**
 * Sources a paused site again. JetStream takes each stream up after the last message BSU holds from
 * it, so the readings of the pause arrive once, in order. Returns false if `site` was not paused.
 */
export async function resumeSite(nc: NatsConnection, jsm: JetStreamManager, site: string): Promise<boolean> {
  const kv = await controlBucket(nc);
  const pause = await readPause(kv, site);
  if (!pause) return false;
  const info = await hubInfo(jsm);
  if (info) {
    const names = new Set(pause.sources.map((s) => s.name));
    const others = (info.config.sources ?? []).filter((s) => !names.has(s.name));
    await jsm.streams.update(HUB_STREAM, { ...info.config, sources: [...others, ...pause.sources] });
  }
  await kv.delete(pauseKey(site));
  return true;
}

export interface SiteSourceStatus {
  site: string;
  /** Sourcing paused by an operator (`site pause`). */
  paused: boolean;
  /** Messages the hub has yet to source from the site's streams (as of the last contact). */
  lag: number;
  /** Milliseconds since the hub last heard from the site's streams; undefined if never. */
  lastContactMs: number | undefined;
  streams: { name: string; lag: number; lastContactMs: number | undefined; error?: string }[];
}

/** Every site `BSU` sources, with its lag and last contact, and the `paused` ones (pausedSites). */
export async function listSites(
  jsm: JetStreamManager,
  paused: ReadonlyMap<string, SitePause> = new Map(),
): Promise<SiteSourceStatus[]> {
  const info = await hubInfo(jsm);
  const bySite = new Map<string, SiteSourceStatus>();
  /** The entry of `site`, made (not paused, nothing heard yet) on first sight. */
  const entryOf = (site: string): SiteSourceStatus => {
    let entry = bySite.get(site);
    if (!entry)
      bySite.set(site, (entry = { site, paused: false, lag: 0, lastContactMs: undefined, streams: [] }));
    return entry;
  };
  for (const site of paused.keys()) entryOf(site).paused = true;
  for (const source of info?.config.sources ?? []) entryOf(siteOfStream(source.name) ?? source.name);
  for (const s of info?.sources ?? []) {
    const entry = entryOf(siteOfStream(s.name) ?? s.name);
    const lastContactMs = s.active >= 0 ? Math.round(s.active / 1e6) : undefined;
    entry.streams.push({
      name: s.name,
      lag: s.lag,
      lastContactMs,
      ...(s.error ? { error: s.error.description } : {}),
    });
    entry.lag += s.lag;
    // The site was last heard from by whichever of its streams spoke most recently.
    if (lastContactMs !== undefined)
      entry.lastContactMs = Math.min(entry.lastContactMs ?? Infinity, lastContactMs);
  }
  return [...bySite.values()].sort((a, b) => a.site.localeCompare(b.site, undefined, { numeric: true }));
}
