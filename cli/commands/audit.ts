/**
 * `switchyard audit --since T --until T [--site S] [--deep]`: the completeness ledger
 * (cloud/audit.ts, docs/audit.md). Exit 0 when it finds no gap, 1 when it finds one.
 */
import { Command } from 'commander';
import { archiveConsumer } from '../../cloud/archive/consumer.ts';
import {
  ARCHIVE,
  DEFAULT_ENGINE_SETTLE_MS,
  runAudit,
  type AuditReport,
  type AuditRow,
} from '../../cloud/audit.ts';
import { loadConsumerConfig } from '../../cloud/consumer.ts';
import { ingestConsumer } from '../../cloud/ingest/consumer.ts';
import { createEngineReader } from '../../cloud/ingest/readers/index.ts';
import { ExitCode, UsageError } from '../../lib/errors.ts';
import { createProgress } from '../../lib/progress.ts';
import { HUB_STREAM } from '../../schemas/streams.ts';
import { addOperatorOptions, timeFlag, withOperator, type OperatorFlags } from '../operator.ts';
import type { RegisterCommand } from './index.ts';

interface AuditFlags extends OperatorFlags {
  since?: string;
  until?: string;
  site?: string;
  deep?: boolean;
  settleMs?: string;
  stream: string;
}

export const registerAudit: RegisterCommand = (program) => {
  const command = new Command('audit')
    .description(
      'Did we lose data? Per site and hour, counts the messages in the hub stream (while it holds the hour), the ' +
        'records in the S3 archive (from the manifests; --deep reads and verifies every object) and the points in ' +
        'each engine that has an ingest durable, compares them, and lists every gap with where it is. What a ' +
        'consumer has not acknowledged yet is reported as not yet archived or ingested, not as lost. Exit 0: no ' +
        'gap; 1: a gap (or a failure); 2: bad usage.',
    )
    .requiredOption('--since <time>', 'from this hour (ISO-8601; widened to the start of its hour)')
    .requiredOption('--until <time>', 'to this hour (ISO-8601, exclusive; widened to the end of its hour)')
    .option('--site <site>', 'only this site')
    .option(
      '--deep',
      'read every archive object and check its sha256; compare the engines in hours the stream no longer holds',
    )
    .option(
      '--settle-ms <ms>',
      `how long an engine short of points gets to show writes it acknowledged (default ${DEFAULT_ENGINE_SETTLE_MS})`,
    )
    .option('--stream <name>', 'the hub stream', HUB_STREAM);
  addOperatorOptions(command).action(async (flags: AuditFlags) => {
    const sinceMs = timeFlag('since', flags.since)!;
    const untilMs = timeFlag('until', flags.until)!;
    if (untilMs <= sinceMs) throw new UsageError('--until must be after --since');
    const settleMs = flags.settleMs === undefined ? undefined : Number(flags.settleMs);
    if (settleMs !== undefined && !(Number.isInteger(settleMs) && settleMs >= 0))
      throw new UsageError(`--settle-ms must be a whole number of ms, got ${flags.settleMs}`);
    process.exitCode = await withOperator('audit', flags, async (ctx) => {
      const archive = ctx.archive();
      const archiveDurable = loadConsumerConfig(archiveConsumer, { env: ctx.env, file: '' }).durable;
      const report = await runAudit({
        nc: await ctx.hub(),
        stream: flags.stream,
        sinceMs,
        untilMs,
        site: flags.site,
        deep: flags.deep,
        settleMs,
        archive: { ...archive, durable: archiveDurable },
        // The settings ingest writes with, so the audit reads what the consumers wrote.
        engineReader: (engine) =>
          createEngineReader(
            engine,
            loadConsumerConfig(ingestConsumer, { flags: { sink: engine }, env: ctx.env, file: '' }),
          ),
        progress: (options) => createProgress(options),
        signal: ctx.signal,
      });
      ctx.report(report, () => describeAudit(report));
      return report.gaps.length > 0 ? ExitCode.failure : ExitCode.ok;
    });
  });
  program.addCommand(command);
};

/** Longest list of gaps or not-yet lines printed; --json has them all. */
const MAX_LINES = 200;

/** The report for people: the durables, a table per site and hour, the gaps, what is not done yet. */
export function describeAudit(r: AuditReport): string {
  const lines: string[] = [];
  const held = r.streamState.heldFrom;
  lines.push(
    `audit of ${r.stream}${r.site ? ` (site ${r.site})` : ''}, ${r.since} … ${r.until}${r.deep ? ', deep' : ''}: ` +
      `stream sequences ${r.streamState.firstSeq}–${r.streamState.lastSeq}, ` +
      (held === null
        ? 'it holds no whole hour of the window'
        : held === r.since.slice(0, 13)
          ? 'it holds every hour of the window'
          : `it holds the hours from ${held}`),
  );
  for (const d of r.durables)
    lines.push(
      d.exists
        ? `  durable ${d.durable}${d.durable === d.target ? '' : ` (${d.target})`}: acked up to ${d.ackFloorSeq}, ` +
            `${d.pending} pending, ${d.ackPending} awaiting ack` +
            (d.deadLetters ? `, ${d.deadLetters} dead letters` : '')
        : `  durable ${d.durable}${d.durable === d.target ? '' : ` (${d.target})`}: does not exist${d.target === ARCHIVE ? ': nothing is being archived' : ''}`,
    );
  if (r.engines.length === 0) lines.push('  no ingest durable: no engine audited');
  lines.push('', ...table(r));

  if (r.gaps.length === 0) lines.push('', 'no gaps');
  else {
    lines.push('', `gaps (${r.gaps.length}):`);
    for (const g of r.gaps.slice(0, MAX_LINES)) {
      if (g.where === ARCHIVE && 'sequences' in g) {
        const seqs =
          g.sequences.length > 0
            ? `: ${g.sequences.join(', ')}${g.missing > g.sequences.length ? ', …' : ''}`
            : '';
        lines.push(`  ${g.site} ${g.hour} archive: ${g.missing} sequences lost${seqs}`);
        for (const o of g.objects ?? []) lines.push(`    object ${o.key}: ${o.reason}`);
      } else if ('measurement' in g) {
        const devices = g.devices
          .map(
            (d) =>
              `${d.device} ${d.found} of ${d.expected}` +
              (d.deadLettered > 0 ? `, ${d.deadLettered} dead-lettered` : ''),
          )
          .join('; ');
        lines.push(
          `  ${g.site} ${g.hour} ${g.where}: ${g.measurement} ${g.found} of ${g.expected} points, ` +
            `${g.missing} missing (${devices})`,
        );
        if (g.deadLettered > 0)
          lines.push(`    dead letters: switchyard dlq list --consumer ingest-${g.where}`);
      }
    }
    if (r.gaps.length > MAX_LINES) lines.push(`  … ${r.gaps.length - MAX_LINES} more (--json lists all)`);
  }
  const covered = r.badObjects.filter((o) => o.uncovered === 0);
  if (covered.length > 0) {
    lines.push('', 'objects that failed, whose records other objects hold (not a gap):');
    for (const o of covered.slice(0, MAX_LINES)) lines.push(`  ${o.key}: ${o.reason}`);
  }
  if (r.notYet.length > 0) {
    lines.push('', 'not yet (after the durable’s ack floor, not lost):');
    for (const n of r.notYet.slice(0, MAX_LINES))
      lines.push(
        n.where === ARCHIVE
          ? `  ${n.site} ${n.hour}: ${n.count} sequences not yet archived`
          : `  ${n.site} ${n.hour}: ${n.count} points not yet ingested into ${n.where}`,
      );
    if (r.notYet.length > MAX_LINES) lines.push(`  … ${r.notYet.length - MAX_LINES} more (--json lists all)`);
  }
  const s = r.summary;
  const engines = Object.entries(s.engines).map(
    ([engine, e]) => `${engine} ${e.found} points (${e.missing} missing, ${e.notYet} not yet)`,
  );
  lines.push(
    '',
    `summary: ${s.siteHours} site-hours (${s.heldSiteHours} held by the stream), ${s.hubMessages} messages in the ` +
      `stream, ${s.archived} archived (${s.archiveLost} lost, ${s.archiveNotYet} not yet)` +
      (engines.length > 0 ? `, ${engines.join(', ')}` : '') +
      (s.unparsed > 0 ? `, ${s.unparsed} messages with a subject that does not parse` : '') +
      `: ${s.gaps === 0 ? 'no gaps' : s.gaps === 1 ? '1 gap' : `${s.gaps} gaps`}`,
  );
  return lines.join('\n');
}

/**
 * One line per site and hour: hub and archive by receive hour, each engine by device-time hour as
 * `found` or `found/expected`. `!` marks a gap; `*` an hour the stream no longer holds whole (its
 * hub count is partial; engines are not compared without --deep: `?`); `+n` what is not done yet.
 */
function table(r: AuditReport): string[] {
  const header = ['site', 'hour', 'hub', 'archive', ...r.engines];
  const gapAt = new Set(r.gaps.map((g) => `${g.site} ${g.hour} ${g.where}`));
  const cells = r.rows.map((row: AuditRow) => {
    const mark = (where: string): string => (gapAt.has(`${row.site} ${row.hour} ${where}`) ? ' !' : '');
    const archive =
      `${row.archive}` + (row.archiveNotYet > 0 ? ` +${row.archiveNotYet}` : '') + mark(ARCHIVE);
    const engines = r.engines.map((engine) => {
      const c = row.engines[engine]!;
      if (!c.compared) return `${c.found} ?`;
      const counts = c.found === c.expected ? `${c.found}` : `${c.found}/${c.expected}`;
      return counts + (c.notYet > 0 ? ` +${c.notYet}` : '') + mark(engine);
    });
    return [row.site, row.hour, `${row.hub}${row.held ? '' : ' *'}`, archive, ...engines];
  });
  if (cells.length === 0) return ['(nothing in the window)'];
  const widths = header.map((h, i) => Math.max(h.length, ...cells.map((c) => c[i]!.length)));
  const line = (c: string[]): string =>
    c
      .map((v, i) => (i < 2 ? v.padEnd(widths[i]!) : v.padStart(widths[i]!)))
      .join('  ')
      .trimEnd();
  const legend: string[] = [];
  if (r.rows.some((row) => !row.held))
    legend.push(
      `* the stream no longer holds the whole hour: not compared with it${r.deep ? '' : '; ? engines not compared (--deep compares them from the archive)'}`,
    );
  if (r.gaps.length > 0) legend.push('! a gap (listed below)');
  if (r.notYet.length > 0) legend.push('+n not yet archived or ingested');
  return [line(header), ...cells.map(line), ...(legend.length > 0 ? ['', ...legend] : [])];
}
