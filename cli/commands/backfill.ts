/**
 * `switchyard backfill`: a time range of the S3 archive through a consumer's sink (docs/replay.md).
 */
import { Command } from 'commander';
import { createHash } from 'node:crypto';
import { join } from 'node:path';
import { backfillId, runBackfill, type BackfillReport } from '../../cloud/backfill.ts';
import { ExitCode, UsageError } from '../../lib/errors.ts';
import { createProgress } from '../../lib/progress.ts';
import { addOperatorOptions, intFlag, timeFlag, withOperator, type OperatorFlags } from '../operator.ts';
import type { RegisterCommand } from './index.ts';

interface BackfillFlags extends OperatorFlags {
  to?: string;
  sink?: string;
  since?: string;
  until?: string;
  site?: string;
  device?: string;
  checkpoint?: string;
  batchSize?: string;
}

export const registerBackfill: RegisterCommand = (program) => {
  const command = new Command('backfill')
    .description(
      "Loads a time range of the S3 archive (receive time) into a consumer's store through its own sink: finds " +
        "the objects through their manifests, verifies each sha256 (of a whole object, or of one site's part read " +
        'alone), feeds records in sequence order, each sequence once, and checkpoints every finished group of ' +
        'objects so a killed backfill resumes where it ' +
        'stopped. A corrupt or missing object is reported by key and skipped; the exit code is 1 if anything was.',
    )
    .requiredOption('--to <consumer>', 'the consumer whose store is filled: monitor or ingest')
    .option('--sink <engine>', 'with --to ingest: influx1 or influx2 (default: SWITCHYARD_SINK)')
    .requiredOption('--since <time>', 'from this receive time (ISO-8601, inclusive)')
    .requiredOption('--until <time>', 'to this receive time (ISO-8601, exclusive)')
    .option('--site <site>', 'only this site')
    .option('--device <device>', 'only this device')
    .option(
      '--checkpoint <file>',
      'progress file (default: .switchyard/backfill/<durable>-<request id>.json)',
    )
    .option('--batch-size <n>', "records per sink write (default the consumer's batch size)");
  addOperatorOptions(command).action(async (flags: BackfillFlags) => {
    if (flags.to === 'archive')
      throw new UsageError('the archive is the source of a backfill: use --to monitor or ingest');
    const sinceMs = timeFlag('since', flags.since)!;
    const untilMs = timeFlag('until', flags.until)!;
    if (untilMs <= sinceMs) throw new UsageError('--until must be after --since');
    process.exitCode = await withOperator('backfill', flags, async (ctx) => {
      const { spec, config, sink } = await ctx.openSink(flags.to!, flags.sink ? { sink: flags.sink } : {});
      const sinkSettings = Object.keys(spec.sinkConfigSchema.properties).map((k) => [
        k,
        (config as Record<string, unknown>)[k],
      ]);
      const request = {
        sinceMs,
        untilMs,
        site: flags.site,
        device: flags.device,
        target: config.durable,
        // A digest: the settings hold credentials, and the request is printed in the report.
        destination: createHash('sha256').update(JSON.stringify(sinkSettings)).digest('hex').slice(0, 16),
      };
      const checkpoint =
        flags.checkpoint ?? join('.switchyard', 'backfill', `${config.durable}-${backfillId(request)}.json`);
      const report = await runBackfill({
        request,
        archive: ctx.archive(),
        sink,
        consumerFilters: config.filterSubjects,
        batchSize: intFlag('batch-size', flags.batchSize) ?? config.batchSize,
        checkpoint,
        log: ctx.log,
        progress: (total) => createProgress({ label: `backfill → ${config.durable}`, unit: 'groups', total }),
        signal: ctx.signal,
      });
      ctx.report(report, () => describeBackfill(report));
      return report.skippedObjects.length > 0 || report.rejectedCount > 0 ? ExitCode.failure : ExitCode.ok;
    });
  });
  program.addCommand(command);
};

export function describeBackfill(r: BackfillReport): string {
  const lines = [
    `backfill → ${r.request.target}: ${r.groups} groups of objects (${r.resumed} done by an earlier run), ` +
      `${r.records} records read, ${r.written} written, ${r.skipped} outside the consumer's filter, ` +
      `${r.rejectedCount} rejected`,
  ];
  for (const x of r.rejected) lines.push(`  rejected seq ${x.seq}: ${x.reason}`);
  for (const o of r.skippedObjects) lines.push(`  skipped ${o.key}: ${o.reason}`);
  lines.push(`  checkpoint: ${r.checkpoint}`);
  return lines.join('\n');
}
