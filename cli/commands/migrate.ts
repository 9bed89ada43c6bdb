/**
 * `switchyard migrate <plan|start|backfill|verify|cutover> --from ENGINE --to ENGINE`: the engine
 * swap, one step per command (cloud/migrate.ts, docs/engine-swap.md).
 */
import { Command } from 'commander';
import { jetstreamManager } from '@nats-io/jetstream';
import { loadConsumerConfig } from '../../cloud/consumer.ts';
import { ingestConsumer } from '../../cloud/ingest/consumer.ts';
import { createEngineReader } from '../../cloud/ingest/readers/index.ts';
import { IngestEngine } from '../../cloud/ingest/config.ts';
import { COUNT, verifyEngines, type VerifyReport } from '../../cloud/ingest/verify.ts';
import {
  engineDurable,
  planMigration,
  readMigration,
  startMigration,
  writeMigration,
  type MigrationPlan,
} from '../../cloud/migrate.ts';
import { plannedMessages, planReplay, runReplay } from '../../cloud/replay.ts';
import { confirm } from '../../lib/confirm.ts';
import { ExitCode, UsageError } from '../../lib/errors.ts';
import { createProgress } from '../../lib/progress.ts';
import { HUB_STREAM } from '../../schemas/streams.ts';
import {
  addOperatorOptions,
  timeFlag,
  withOperator,
  type OperatorContext,
  type OperatorFlags,
} from '../operator.ts';
import { describeReplayPlan, describeReplayReport } from './replay.ts';
import type { RegisterCommand } from './index.ts';

const ENGINES: readonly string[] = Object.values(IngestEngine);

interface MigrateFlags extends OperatorFlags {
  from: string;
  to: string;
  stream: string;
  since?: string;
  until?: string;
  site?: string;
  device?: string;
  allFields?: boolean;
  confirm?: boolean;
  yes?: boolean;
}

export const registerMigrate: RegisterCommand = (program) => {
  const migrate = new Command('migrate').description(
    'The engine swap, one step per command, each safe to run again: plan, start (the new engine ingests from ' +
      "the hub's next sequence W), backfill (everything before W into the new engine), verify (old against new " +
      'per site, device and hour), cutover. Engines are named as ingest --sink names them: influx1, influx2.',
  );
  const step = (name: string, description: string) => {
    const command = new Command(name)
      .description(description)
      .requiredOption('--from <engine>', 'the engine in use now: influx1 or influx2')
      .requiredOption('--to <engine>', 'the engine to move to: influx1 or influx2')
      .option('--stream <name>', 'the hub stream', HUB_STREAM);
    migrate.addCommand(addOperatorOptions(command));
    return command;
  };
  step('plan', 'What each step will do, from which sequence, and which durables exist.').action(
    (flags: MigrateFlags) => run(flags, plan),
  );
  step('start', "Creates the new engine's durable at the hub's next sequence and records that sequence.")
    .option('--yes', 'do not ask for confirmation')
    .action((flags: MigrateFlags) => run(flags, start));
  step(
    'backfill',
    'Writes everything before the recorded sequence into the new engine (stream, then archive).',
  )
    .option('--yes', 'do not ask for confirmation')
    .action((flags: MigrateFlags) => run(flags, backfill));
  step('verify', 'Compares old and new engine per site, device and hour; exit 1 on any mismatch.')
    .requiredOption('--since <time>', 'from this device time (ISO-8601, inclusive)')
    .requiredOption('--until <time>', 'to this device time (ISO-8601, exclusive)')
    .option('--site <site>', 'only this site')
    .option('--device <device>', 'only this device')
    .option('--all-fields', 'compare every numeric telemetry field, not only SoC and W')
    .action((flags: MigrateFlags) => run(flags, verify));
  step('cutover', "Prints what to switch; deletes the old engine's durable only with --confirm.")
    .option('--confirm', "delete the old engine's durable")
    .option('--yes', 'do not ask for confirmation')
    .action((flags: MigrateFlags) => run(flags, cutover));
  program.addCommand(migrate);
};

async function run(
  flags: MigrateFlags,
  work: (ctx: OperatorContext, flags: MigrateFlags) => Promise<number>,
) {
  for (const engine of [flags.from, flags.to])
    if (!ENGINES.includes(engine))
      throw new UsageError(`unknown engine ${engine}: use ${ENGINES.join(' or ')}`);
  if (flags.from === flags.to) throw new UsageError('--from and --to name the same engine');
  process.exitCode = await withOperator('migrate', flags, (ctx) => work(ctx, flags));
}

async function plan(ctx: OperatorContext, flags: MigrateFlags): Promise<number> {
  const p = await planMigration(await ctx.hub(), flags);
  ctx.report(p, () => describePlan(p));
  return ExitCode.ok;
}

async function start(ctx: OperatorContext, flags: MigrateFlags): Promise<number> {
  const nc = await ctx.hub();
  const existing = await readMigration(nc, flags.from, flags.to);
  if (!existing && !(await confirm(`start ingesting into ${flags.to} from the hub's next sequence`, flags)))
    return ExitCode.ok;
  const { config } = await ctx.consumerConfig('ingest', { sink: flags.to });
  const { record, created } = await startMigration(nc, {
    from: flags.from,
    to: flags.to,
    stream: flags.stream,
    consumer: config,
    log: ctx.log,
  });
  ctx.report(
    { record, created },
    () =>
      (existing
        ? `already started: ${engineDurable(flags.to)} delivers from sequence ${record.startSeq} (${record.startedAt})`
        : `started: ${engineDurable(flags.to)} delivers from sequence ${record.startSeq}`) +
      `\nnext: run 'switchyard ingest --sink ${flags.to}' (both engines now ingest), then 'switchyard migrate backfill --from ${flags.from} --to ${flags.to}'`,
  );
  return ExitCode.ok;
}

async function backfill(ctx: OperatorContext, flags: MigrateFlags): Promise<number> {
  const nc = await ctx.hub();
  const record = await readMigration(nc, flags.from, flags.to);
  if (!record)
    throw new UsageError(`no swap ${flags.from} → ${flags.to} started: run 'switchyard migrate start' first`);
  if (record.startSeq <= 1) {
    ctx.report({ record, written: 0 }, () => 'nothing before the start sequence: no backfill needed');
    return ExitCode.ok;
  }
  const request = { stream: flags.stream, fromSeq: 1, toSeq: record.startSeq - 1 };
  const replayPlan = await planReplay(nc, request);
  process.stderr.write(`${describeReplayPlan(engineDurable(flags.to), replayPlan)}\n`);
  if (!(await confirm(`write sequences 1–${record.startSeq - 1} into ${flags.to}`, flags)))
    return ExitCode.ok;
  const { config, sink } = await ctx.openSink('ingest', { sink: flags.to });
  const total = plannedMessages(replayPlan);
  const progress = createProgress({ label: `backfill → ${config.durable}`, unit: 'msgs', total });
  try {
    const report = await runReplay({
      plan: replayPlan,
      request,
      nc,
      sink,
      consumerFilters: config.filterSubjects,
      archive: replayPlan.archive ? ctx.archive() : undefined,
      batchSize: config.batchSize,
      log: ctx.log,
      progress,
      signal: ctx.signal,
    });
    const complete =
      report.rejectedCount === 0 && report.skippedObjects.length === 0 && report.missingFromArchive === 0;
    if (complete) await writeMigration(nc, { ...record, backfilledAt: new Date().toISOString() });
    ctx.report(report, () => describeReplayReport(report));
    return complete ? ExitCode.ok : ExitCode.failure;
  } finally {
    progress.stop();
  }
}

async function verify(ctx: OperatorContext, flags: MigrateFlags): Promise<number> {
  const sinceMs = timeFlag('since', flags.since)!;
  const untilMs = timeFlag('until', flags.until)!;
  if (untilMs <= sinceMs) throw new UsageError('--until must be after --since');
  const config = loadConsumerConfig(ingestConsumer, { flags: { sink: flags.to }, env: ctx.env, file: '' });
  const reader = (engine: string) => createEngineReader(engine as IngestEngine, config);
  const [oldReader, newReader] = [reader(flags.from), reader(flags.to)];
  const report = await verifyEngines(oldReader, newReader, {
    sinceMs,
    untilMs,
    site: flags.site,
    device: flags.device,
    allFields: flags.allFields,
    signal: ctx.signal,
  }).finally(() => Promise.all([oldReader.close(), newReader.close()]));
  ctx.report(report, () => describeVerify(flags, report));
  return report.mismatches.length === 0 ? ExitCode.ok : ExitCode.failure;
}

async function cutover(ctx: OperatorContext, flags: MigrateFlags): Promise<number> {
  const nc = await ctx.hub();
  const record = await readMigration(nc, flags.from, flags.to);
  const oldDurable = engineDurable(flags.from);
  const lines = [
    `cutover ${flags.from} → ${flags.to}:`,
    `  1. point dashboards and queries at ${flags.to}; set SWITCHYARD_SINK=${flags.to} where ingest is configured`,
    `  2. stop 'switchyard ingest --sink ${flags.from}' (its Deployment), keep 'switchyard ingest --sink ${flags.to}'`,
    `  3. run this again with --confirm to delete the durable ${oldDurable}`,
  ];
  if (!record?.backfilledAt)
    lines.push(
      `  warning: the backfill has not completed (run 'switchyard migrate backfill' and 'verify' first)`,
    );
  if (!flags.confirm) {
    ctx.report({ record, deleted: false }, () => lines.join('\n'));
    return ExitCode.ok;
  }
  if (!(await confirm(`delete durable ${oldDurable}`, flags))) return ExitCode.ok;
  const jsm = await jetstreamManager(nc);
  const deleted = await jsm.consumers.delete(flags.stream, oldDurable).catch(() => false);
  if (record) await writeMigration(nc, { ...record, cutoverAt: new Date().toISOString() });
  ctx.report({ record, deleted }, () =>
    deleted
      ? `deleted durable ${oldDurable}: ${flags.to} is the engine now`
      : `no durable ${oldDurable} to delete`,
  );
  return ExitCode.ok;
}

function describePlan(p: MigrationPlan): string {
  const lines = [
    `engine swap ${p.from} → ${p.to} on ${p.stream} (sequences ${p.streamFirstSeq}–${p.streamLastSeq} held)`,
  ];
  for (const [durable, d] of Object.entries(p.durables))
    lines.push(
      `  durable ${durable}: ${d.exists ? `acked up to ${d.ackFloorSeq}, ${d.pending} pending` : 'does not exist'}`,
    );
  for (const s of p.steps) lines.push(`  [${s.state}] ${s.step}: ${s.what}`);
  return lines.join('\n');
}

function describeVerify(flags: MigrateFlags, r: VerifyReport): string {
  const lines = [
    `verify ${flags.from} against ${flags.to}: ${r.compared} site-device-hours of ${r.measurement}, ` +
      `fields ${r.fields.join(', ')}: ${r.mismatches.length} mismatches`,
  ];
  for (const m of r.mismatches.slice(0, 200))
    lines.push(
      `  ${m.site} ${m.device} ${m.hour} ${m.field === COUNT ? 'points' : `${m.field} ${m.stat}`}: ` +
        `${flags.from} ${m.old}, ${flags.to} ${m.new}` +
        (m.missing ? ` (missing in ${m.missing === 'old' ? flags.from : flags.to})` : ''),
    );
  if (r.mismatches.length > 200) lines.push(`  … ${r.mismatches.length - 200} more (--json lists all)`);
  return lines.join('\n');
}
