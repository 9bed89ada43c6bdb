/**
 * `switchyard replay`: re-run a consumer from a JetStream sequence (docs/replay.md).
 *
 * - `--to <consumer> --from-seq N [--to-seq M]`: one-shot through the consumer's own sink, no
 *   durable touched (cloud/replay.ts);
 * - `--consumer <durable> --from-seq N | --from-time T`: moves the durable, so the running service
 *   re-processes from there (cloud/move-durable.ts).
 */
import { Command } from 'commander';
import { clearStaleMove, moveDurable, planMove, type MovePlan } from '../../cloud/move-durable.ts';
import {
  plannedMessages,
  planReplay,
  runReplay,
  type ReplayPlan,
  type ReplayReport,
} from '../../cloud/replay.ts';
import { confirm } from '../../lib/confirm.ts';
import { ExitCode, UsageError } from '../../lib/errors.ts';
import { createProgress } from '../../lib/progress.ts';
import { HUB_STREAM } from '../../schemas/streams.ts';
import { addOperatorOptions, intFlag, timeFlag, withOperator, type OperatorFlags } from '../operator.ts';
import type { RegisterCommand } from './index.ts';

interface ReplayFlags extends OperatorFlags {
  to?: string;
  sink?: string;
  consumer?: string;
  fromSeq?: string;
  toSeq?: string;
  fromTime?: string;
  site?: string;
  device?: string;
  dryRun?: boolean;
  yes?: boolean;
  clearMove?: boolean;
  batchSize?: string;
  stream: string;
}

export const registerReplay: RegisterCommand = (program) => {
  const command = new Command('replay')
    .description(
      'Re-runs a consumer from a JetStream sequence of the hub stream. With --to, reads the range and writes it ' +
        "through that consumer's own sink (idempotent: overlapping the live consumer is safe); the part older " +
        'than the first sequence the stream still holds comes from the S3 archive. With --consumer, moves that ' +
        'durable so the running service re-processes from there (refused while instances are attached). Prints ' +
        'the plan first; --dry-run stops there.',
    )
    .option('--to <consumer>', 'one-shot replay through this consumer: archive, monitor or ingest')
    .option('--sink <engine>', 'with --to ingest: influx1 or influx2 (default: SWITCHYARD_SINK)')
    .option('--consumer <durable>', 'move this durable (archive, monitor, ingest-influx2, …)')
    .option('--from-seq <n>', 'first stream sequence')
    .option('--to-seq <n>', 'last stream sequence (with --to; default the last one stored)')
    .option('--from-time <time>', 'with --consumer: the first message stored at or after this ISO-8601 time')
    .option('--site <site>', 'with --to: only this site')
    .option('--device <device>', 'with --to: only this device')
    .option('--batch-size <n>', 'messages per sink write (with --to; default the consumer’s batch size)')
    .option('--stream <name>', 'the hub stream', HUB_STREAM)
    .option('--dry-run', 'print the plan and stop')
    .option('--yes', 'do not ask for confirmation')
    .option('--clear-move', 'with --consumer: remove the marker a move that died left behind');
  addOperatorOptions(command).action(async (flags: ReplayFlags) => {
    if ((flags.to === undefined) === (flags.consumer === undefined))
      throw new UsageError('give either --to <consumer> (one-shot) or --consumer <durable> (move a durable)');
    process.exitCode = flags.to !== undefined ? await replayTo(flags) : await moveConsumer(flags);
  });
  program.addCommand(command);
};

async function replayTo(flags: ReplayFlags): Promise<number> {
  const fromSeq = intFlag('from-seq', flags.fromSeq);
  if (fromSeq === undefined) throw new UsageError('--to needs --from-seq N');
  if (flags.fromTime !== undefined)
    throw new UsageError('--from-time goes with --consumer; --to takes --from-seq');
  const toSeq = intFlag('to-seq', flags.toSeq);
  if (toSeq !== undefined && toSeq < fromSeq) throw new UsageError('--to-seq is before --from-seq');
  return withOperator('replay', flags, async (ctx) => {
    const nc = await ctx.hub();
    const request = { stream: flags.stream, fromSeq, toSeq, site: flags.site, device: flags.device };
    const plan = await planReplay(nc, request);
    process.stderr.write(`${describeReplayPlan(flags.to!, plan)}\n`);
    const { config, sink } = await ctx.openSink(flags.to!, flags.sink ? { sink: flags.sink } : {});
    const total = plannedMessages(plan);
    const progress = flags.dryRun
      ? undefined
      : createProgress({ label: `replay → ${config.durable}`, unit: 'msgs', total });
    let report: ReplayReport;
    try {
      report = await runReplay({
        plan,
        request,
        nc,
        sink,
        consumerFilters: config.filterSubjects,
        archive: plan.archive ? ctx.archive() : undefined,
        batchSize: intFlag('batch-size', flags.batchSize) ?? config.batchSize,
        log: ctx.log,
        progress,
        signal: ctx.signal,
        dryRun: flags.dryRun,
      });
    } finally {
      progress?.stop();
    }
    ctx.report(report, () => describeReplayReport(report));
    const incomplete =
      report.rejectedCount > 0 || report.skippedObjects.length > 0 || report.missingFromArchive > 0;
    return incomplete ? ExitCode.failure : ExitCode.ok;
  });
}

async function moveConsumer(flags: ReplayFlags): Promise<number> {
  const durable = flags.consumer!;
  if (flags.site || flags.device || flags.toSeq || flags.sink)
    throw new UsageError(
      '--consumer moves a whole durable: --site, --device, --to-seq and --sink go with --to',
    );
  return withOperator('replay', flags, async (ctx) => {
    const nc = await ctx.hub();
    if (flags.clearMove) {
      if (!(await confirm(`clear the move marker of ${durable}`, { yes: flags.yes }))) return ExitCode.ok;
      const had = await clearStaleMove(nc, durable);
      process.stderr.write(
        had ? `cleared the move marker of ${durable}\n` : `no move marker for ${durable}\n`,
      );
      return ExitCode.ok;
    }
    const fromSeq = intFlag('from-seq', flags.fromSeq);
    const fromTimeMs = timeFlag('from-time', flags.fromTime);
    if ((fromSeq === undefined) === (fromTimeMs === undefined))
      throw new UsageError('--consumer needs one of --from-seq N or --from-time T');
    const plan = await planMove(nc, {
      stream: flags.stream,
      durable,
      fromSeq,
      fromTime: fromTimeMs !== undefined ? new Date(fromTimeMs).toISOString() : undefined,
    });
    process.stderr.write(`${describeMovePlan(plan)}\n`);
    if (flags.dryRun) {
      ctx.report({ plan, moved: false }, () => 'dry run: nothing changed');
      return ExitCode.ok;
    }
    if (!(await confirm(`move durable ${durable} to sequence ${plan.startSeq}`, { yes: flags.yes }))) {
      process.stderr.write('nothing changed\n');
      return ExitCode.ok;
    }
    const info = await moveDurable(nc, plan);
    ctx.report(
      { plan, moved: true, pending: info.num_pending },
      () =>
        `moved ${durable}: it delivers from sequence ${plan.startSeq} (${info.num_pending} messages to process); start its consumers again`,
    );
    return ExitCode.ok;
  });
}

const range = (from: number, to: number): string => (from === to ? `${from}` : `${from}–${to}`);

export function describeReplayPlan(to: string, plan: ReplayPlan): string {
  const lines = [
    `replay → ${to}: sequences ${range(plan.fromSeq, plan.toSeq)} of ${plan.stream} (${plan.filter})`,
  ];
  if (plan.archive)
    lines.push(
      `  from the archive: ${range(plan.archive.fromSeq, plan.archive.toSeq)} (the stream starts at ${plan.streamFirstSeq})`,
    );
  if (plan.hub)
    lines.push(
      `  from the stream:  ${range(plan.hub.fromSeq, plan.hub.toSeq)}, ${plan.hub.messages} messages`,
    );
  if (!plan.archive && !plan.hub) lines.push('  nothing in range');
  return lines.join('\n');
}

export function describeReplayReport(r: ReplayReport): string {
  const lines = [
    `${r.dryRun ? 'dry run: would replay' : 'replayed'} ${r.fromArchive + r.fromStream} messages ` +
      `(${r.fromArchive} from the archive, ${r.fromStream} from the stream): ${r.written} written, ` +
      `${r.skipped} outside the consumer's filter, ${r.rejectedCount} rejected`,
  ];
  for (const x of r.rejected) lines.push(`  rejected seq ${x.seq}: ${x.reason}`);
  for (const o of r.skippedObjects) lines.push(`  skipped object ${o.key}: ${o.reason}`);
  if (r.missingFromArchive > 0)
    lines.push(`  ${r.missingFromArchive} sequences before the stream's first are not in the archive`);
  return lines.join('\n');
}

export function describeMovePlan(p: MovePlan): string {
  return [
    `move durable ${p.durable} on ${p.stream} (filter ${p.filter ?? 'none'})`,
    `  now:   delivered up to ${p.before.deliveredSeq}, acked up to ${p.before.ackFloorSeq}, ` +
      `${p.before.pending} pending, ${p.before.ackPending} awaiting ack`,
    `  after: delivers from ${p.startSeq}${p.fromTime ? ` (the first message at or after ${p.fromTime})` : ''}, ` +
      `${p.toProcess} messages to process up to ${p.lastSeq}` +
      (p.firstTime ? `, stored ${p.firstTime} … ${p.lastTime}` : ''),
  ].join('\n');
}
