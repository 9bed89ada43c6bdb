/**
 * The console's HTML, rendered on the server from the snapshots: every table is in the page as
 * served, so a person (or curl) sees the whole fleet without running any script. The page's
 * script (assets/console.js) only swaps in the same `<main>` again every refresh interval
 * (`?partial=1`), sorts tables, and draws the site chart.
 */
import type { MigrationRecord } from '../migrate.ts';
import type {
  ConsumerRow,
  DeadLetterSnapshot,
  FleetSnapshot,
  PipelineSnapshot,
  SiteRow,
  UnitRow,
} from './snapshot.ts';

const ESCAPES: Record<string, string> = {
  '&': '&amp;',
  '<': '&lt;',
  '>': '&gt;',
  '"': '&quot;',
  "'": '&#39;',
};

/** `text` safe inside HTML text and quoted attributes. */
export const esc = (text: unknown): string => String(text).replace(/[&<>"']/g, (c) => ESCAPES[c]!);

const thousands = (n: number): string => Math.round(n).toLocaleString('en-US');

/** A duration in ms as people read it: `4 s`, `3 min`, `2 h`. */
export function agoText(ms: number | null): string {
  if (ms === null || !Number.isFinite(ms)) return 'never';
  if (ms < 60_000) return `${Math.max(0, Math.round(ms / 1000))} s`;
  if (ms < 3_600_000) return `${Math.round(ms / 60_000)} min`;
  if (ms < 172_800_000) return `${Math.round(ms / 3_600_000)} h`;
  return `${Math.round(ms / 86_400_000)} d`;
}

const when = (ms: number | null, nowMs: number): string =>
  ms === null ? 'never' : `${agoText(nowMs - ms)} ago`;

/** A table cell with the value its column sorts by (numbers sort as numbers, missing ones last). */
function cell(text: string, sort: string | number | null, cls = ''): string {
  const value = sort === null ? '' : String(sort);
  return `<td${cls ? ` class="${cls}"` : ''} data-sort="${esc(value)}">${text}</td>`;
}

/** A header row; each column sorts as `num` or `text`; `left` keeps a numeric column's title left. */
function head(columns: [string, 'num' | 'text', 'left'?][]): string {
  return `<thead><tr>${columns
    .map(
      ([name, type, align]) =>
        `<th data-type="${type}"${type === 'num' && align !== 'left' ? ' class="num"' : ''} tabindex="0" role="button">${esc(name)}</th>`,
    )
    .join('')}</tr></thead>`;
}

/** Which part of the console a page is. */
export const Page = {
  fleet: 'fleet',
  site: 'site',
  pipeline: 'pipeline',
  deadLetters: 'dead-letters',
} as const;
export type Page = (typeof Page)[keyof typeof Page];

export interface LayoutOptions {
  title: string;
  page: Page;
  main: string;
  refreshMs: number;
  /** Extra `<head>` content (the chart's assets). */
  headExtra?: string;
  /** Data attributes for the script, e.g. the site of the chart. */
  data?: Record<string, string>;
}

/** The whole document around a page's `<main>`. */
export function layout(o: LayoutOptions): string {
  const nav = (
    [
      [Page.fleet, '/', 'Fleet'],
      [Page.pipeline, '/pipeline', 'Pipeline'],
      [Page.deadLetters, '/dead-letters', 'Dead letters'],
    ] as const
  )
    .map(
      ([page, href, label]) =>
        `<a href="${href}"${page === o.page ? ' aria-current="page"' : ''}>${label}</a>`,
    )
    .join('');
  const data = Object.entries({ refreshMs: String(o.refreshMs), ...o.data })
    .map(([k, v]) => ` data-${k.replace(/[A-Z]/g, (c) => `-${c.toLowerCase()}`)}="${esc(v)}"`)
    .join('');
  return `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>${esc(o.title)} · Switchyard</title>
<link rel="icon" href="data:,">
<link rel="stylesheet" href="/assets/console.css">
${o.headExtra ?? ''}
<script src="/assets/console.js" defer></script>
</head>
<body data-page="${o.page}"${data}>
<header><strong>Switchyard</strong><nav>${nav}</nav><span id="live-status" class="muted"></span></header>
<main id="live">
${o.main}
</main>
</body>
</html>
`;
}

function errorsBlock(errors: readonly string[]): string {
  if (errors.length === 0) return '';
  return `<ul class="errors">${errors.map((e) => `<li>${esc(e)}</li>`).join('')}</ul>`;
}

const share = (v: number | null): string => (v === null ? '–' : `${(v * 100).toFixed(1)} %`);

function siteRow(row: SiteRow, nowMs: number): string {
  const link = `<a href="/sites/${encodeURIComponent(row.site)}">${esc(row.site)}</a>`;
  const status = `<span class="badge ${row.status}">${row.status}</span>${
    row.reasons.length ? ` <span class="muted">${esc(row.reasons.join('; '))}</span>` : ''
  }`;
  return `<tr class="site ${row.status}" data-site="${esc(row.site)}">${[
    cell(link, row.site),
    cell(status, row.status === 'ok' ? 0 : row.status === 'lagging' ? 1 : 2),
    cell(thousands(row.units), row.units, 'num units'),
    cell(thousands(row.online), row.online, 'num online'),
    cell(thousands(row.offline), row.offline, `num offline${row.offline > 0 ? ' warn' : ''}`),
    cell(thousands(row.faulted), row.faulted, `num faulted${row.faulted > 0 ? ' bad' : ''}`),
    cell(
      when(row.lastReadingMs, nowMs),
      row.lastReadingMs === null ? null : nowMs - row.lastReadingMs,
      'num',
    ),
    cell(agoText(row.lastContactAgoMs), row.lastContactAgoMs, 'num'),
    cell(row.hubLag === null ? '–' : thousands(row.hubLag), row.hubLag, 'num'),
    cell(row.messagesPerS === null ? '–' : row.messagesPerS.toFixed(1), row.messagesPerS, 'num'),
    cell(share(row.invalidShare), row.invalidShare, 'num'),
  ].join('')}</tr>`;
}

/** The fleet page's `<main>`: totals and one row per site. */
export function fleetMain(f: FleetSnapshot): string {
  const t = f.totals;
  const rows = f.sites.map((r) => siteRow(r, f.takenAtMs)).join('\n');
  return `<h1>Fleet</h1>
<p class="totals"><b>${thousands(t.sites)}</b> sites · <b>${thousands(t.units)}</b> units: ${thousands(t.online)} online, ${thousands(t.offline)} offline, ${thousands(t.faulted)} faulted · <b class="${t.stale ? 'bad' : ''}">${t.stale}</b> silent or lagging · read ${esc(new Date(f.takenAtMs).toISOString())} in ${f.refreshMs} ms</p>
${errorsBlock(f.errors)}
<table id="fleet" class="sortable">
${head([
  ['Site', 'text'],
  ['Status', 'num', 'left'],
  ['Units', 'num'],
  ['Online', 'num'],
  ['Offline', 'num'],
  ['Faulted', 'num'],
  ['Last reading', 'num'],
  ['Hub contact', 'num'],
  ['Hub lag', 'num'],
  ['Msg/s', 'num'],
  ['Invalid', 'num'],
])}
<tbody>
${rows || '<tr><td colspan="11" class="muted">No site yet: none is sourced by the hub or known to the monitor.</td></tr>'}
</tbody>
</table>`;
}

function unitRow(u: UnitRow, nowMs: number): string {
  const health = `<span class="badge ${esc(u.health)}">${esc(u.health || '–')}</span>`;
  return `<tr class="unit ${esc(u.health)}" data-device="${esc(u.device)}">${[
    cell(esc(u.device), u.device),
    cell(health, u.health),
    cell(esc(u.state || '–'), u.state),
    cell(esc(u.chargeState || '–'), u.chargeState),
    cell(u.socPct === null ? '–' : `${u.socPct.toFixed(1)} %`, u.socPct, 'num'),
    cell(u.powerW === null ? '–' : `${thousands(u.powerW)} W`, u.powerW, 'num'),
    cell(esc(u.alarms.join(', ') || '–'), u.alarms.length, u.alarms.length ? 'bad' : ''),
    cell(when(u.lastReadingMs, nowMs), u.lastReadingMs === null ? null : nowMs - u.lastReadingMs, 'num'),
    cell(when(u.lastSeenMs, nowMs), u.lastSeenMs === null ? null : nowMs - u.lastSeenMs, 'num'),
  ].join('')}</tr>`;
}

/** The site page's `<main>`: the site's row, its units, and the chart's place. */
export function siteMain(
  site: string,
  row: SiteRow | undefined,
  units: UnitRow[],
  nowMs: number,
  chartHours: number,
): string {
  const summary = row
    ? `<p class="totals"><span class="badge ${row.status}">${row.status}</span> ${esc(row.reasons.join('; '))} · ${row.units} units: ${row.online} online, ${row.offline} offline, ${row.faulted} faulted · hub lag ${row.hubLag ?? '–'} · last reading ${when(row.lastReadingMs, nowMs)}</p>`
    : '<p class="errors">The hub does not source this site and the monitor does not know it.</p>';
  return `<h1>Site ${esc(site)}</h1>
${summary}
<table id="units" class="sortable">
${head([
  ['Unit', 'text'],
  ['Health', 'text'],
  ['State', 'text'],
  ['Charge', 'text'],
  ['SoC', 'num'],
  ['Power', 'num'],
  ['Alarms', 'num', 'left'],
  ['Last reading', 'num'],
  ['Last seen', 'num'],
])}
<tbody>
${units.map((u) => unitRow(u, nowMs)).join('\n') || '<tr><td colspan="9" class="muted">No unit heard from yet.</td></tr>'}
</tbody>
</table>
<h2>SoC and power, last ${chartHours} h</h2>
<div id="charts" data-keep="1"></div>`;
}

function consumerRow(c: ConsumerRow): string {
  const ready = c.ready
    ? `<span class="badge ok">${c.instances.length} running</span>`
    : '<span class="badge silent">none announced</span>';
  const hosts = c.instances.map((i) => `${i.host} (pid ${i.pid})`).join(', ');
  return `<tr data-durable="${esc(c.durable)}">${[
    cell(esc(c.durable), c.durable),
    cell(`${ready} <span class="muted">${esc(hosts)}</span>`, c.instances.length),
    cell(c.ackedPerS === null ? '–' : c.ackedPerS.toFixed(1), c.ackedPerS, 'num'),
    cell(thousands(c.lag), c.lag, 'num'),
    cell(thousands(c.ackPending), c.ackPending, 'num'),
    cell(thousands(c.redelivered), c.redelivered, `num${c.redelivered > 0 ? ' warn' : ''}`),
    cell(thousands(c.deadLetters), c.deadLetters, `num${c.deadLetters > 0 ? ' bad' : ''}`),
  ].join('')}</tr>`;
}

function migrationRow(m: MigrationRecord): string {
  const step = m.cutoverAt ? 'cut over' : m.backfilledAt ? 'backfilled, verify then cut over' : 'backfilling';
  return `<tr>${[
    cell(esc(m.from), m.from),
    cell(esc(m.to), m.to),
    cell(thousands(m.startSeq), m.startSeq, 'num'),
    cell(esc(m.startedAt), m.startedAt),
    cell(esc(step), step),
  ].join('')}</tr>`;
}

/** The pipeline page's `<main>`: the stream, each durable, the engine swaps, dead letters. */
export function pipelineMain(p: PipelineSnapshot): string {
  const s = p.stream;
  return `<h1>Pipeline</h1>
<p class="totals">${
    s
      ? `Stream <b>${esc(s.name)}</b>: ${thousands(s.messages)} messages, ${(s.bytes / 1048576).toFixed(1)} MiB, last sequence ${thousands(s.lastSeq)}`
      : 'The hub stream cannot be read.'
  } · read ${esc(new Date(p.takenAtMs).toISOString())}</p>
${errorsBlock(p.errors)}
<h2>Consumers</h2>
<table id="consumers" class="sortable">
${head([
  ['Durable', 'text'],
  ['Readiness', 'num', 'left'],
  ['Acked/s', 'num'],
  ['Lag', 'num'],
  ['Ack pending', 'num'],
  ['Redelivered', 'num'],
  ['Dead letters', 'num'],
])}
<tbody>
${p.consumers.map(consumerRow).join('\n') || '<tr><td colspan="7" class="muted">No durable on the stream.</td></tr>'}
</tbody>
</table>
<h2>Engine swaps</h2>
${
  p.migrations.length
    ? `<table id="migrations">${head([
        ['From', 'text'],
        ['To', 'text'],
        ['Start sequence', 'num'],
        ['Started', 'text'],
        ['Step', 'text'],
      ])}<tbody>${p.migrations.map(migrationRow).join('\n')}</tbody></table>`
    : '<p class="muted">No engine swap recorded (<code>switchyard migrate start</code> records one).</p>'
}
<h2>Last audit</h2>
<p class="muted">Not recorded: <code>switchyard audit</code> reports to its caller and keeps no ledger of its runs.</p>
<p><a href="/dead-letters">${thousands(p.deadLetters.total)} dead letters</a></p>`;
}

/** The dead-letter page's `<main>`, as `switchyard dlq list` shows them. */
export function deadLettersMain(d: DeadLetterSnapshot): string {
  const rows = d.letters
    .map(
      (l) =>
        `<tr>${[
          cell(thousands(l.dlqSeq), l.dlqSeq, 'num'),
          cell(esc(l.deadLetteredAt), l.deadLetteredAt),
          cell(esc(l.consumer), l.consumer),
          cell(esc(l.subject), l.subject),
          cell(l.seq === undefined ? '–' : thousands(l.seq), l.seq ?? null, 'num'),
          cell(l.deliveries === undefined ? '–' : String(l.deliveries), l.deliveries ?? null, 'num'),
          cell(esc(l.reason), l.reason, 'reason'),
        ].join('')}</tr>`,
    )
    .join('\n');
  return `<h1>Dead letters</h1>
<p class="totals"><b>${thousands(d.total)}</b> in the dead-letter stream${
    d.total > d.letters.length ? `, the newest ${thousands(d.letters.length)} shown` : ''
  } · read-only: <code>switchyard dlq show</code> and <code>dlq redrive</code> act on them</p>
${errorsBlock(d.errors)}
<table id="dead-letters" class="sortable">
${head([
  ['DLQ seq', 'num'],
  ['Dead-lettered', 'text'],
  ['Consumer', 'text'],
  ['Subject', 'text'],
  ['Stream seq', 'num'],
  ['Deliveries', 'num'],
  ['Reason', 'text'],
])}
<tbody>
${rows || '<tr><td colspan="7" class="muted">No dead letters.</td></tr>'}
</tbody>
</table>`;
}
