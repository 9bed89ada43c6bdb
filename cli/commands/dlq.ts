/**
 * `switchyard dlq list | show | redrive`: the dead letters of every consumer (docs/dead-letters.md),
 * read from the dead-letter stream without touching a durable, and redriven through their
 * consumer's own sink (cloud/dlq-admin.ts).
 */
import { Command } from 'commander';
import {
  DeadLetterTally,
  getDeadLetter,
  listDeadLetters,
  payloadText,
  planRedrive,
  redriveDeadLetters,
  type DeadLetterDetail,
  type DeadLetterSummary,
  type RedrivePlan,
  type RedriveReport,
} from '../../cloud/dlq-admin.ts';
import { confirm } from '../../lib/confirm.ts';
import { ExitCode, UsageError } from '../../lib/errors.ts';
import { createProgress } from '../../lib/progress.ts';
import { DLQ_STREAM } from '../../schemas/streams.ts';
import {
  addOperatorOptions,
  intFlag,
  withOperator,
  type OperatorContext,
  type OperatorFlags,
} from '../operator.ts';
import type { RegisterCommand } from './index.ts';

interface DlqFlags extends OperatorFlags {
  stream?: string;
  consumer?: string;
}

interface ListFlags extends DlqFlags {
  limit?: string;
}

interface RedriveFlags extends DlqFlags {
  seq?: string;
  dryRun?: boolean;
  yes?: boolean;
  batchSize?: string;
}

/** The dead-letter stream: the flag, else the consumers' own setting, else `BSU_DLQ`. */
const dlqStreamOf = (ctx: OperatorContext, flags: DlqFlags): string =>
  flags.stream ?? ctx.env.SWITCHYARD_DLQ_STREAM ?? DLQ_STREAM;

/** Options of every dlq subcommand; a subcommand does not inherit the program's exit override. */
const dlqCommand = (command: Command): Command =>
  addOperatorOptions(
    command.exitOverride().option('--stream <name>', `the dead-letter stream (default ${DLQ_STREAM})`),
  );

export const registerDlq: RegisterCommand = (program) => {
  const dlq = new Command('dlq')
    .description(
      'Dead letters: messages a consumer will never write, kept in the dead-letter stream with the reason, ' +
        'the consumer and the original sequence. List them, show one in full, or redrive them through their ' +
        "consumer's own sink once the cause is fixed.",
    )
    .exitOverride();

  dlqCommand(
    dlq
      .command('list')
      .description(
        'Lists dead letters, oldest first (DLQ sequence, consumer, original sequence and subject, ' +
          'deliveries, when, reason), then counts by consumer and by reason.',
      )
      .option('--consumer <durable>', 'only this consumer’s (archive, monitor, ingest-influx2, …)')
      .option('--limit <n>', 'print at most n dead letters (the counts still cover every one)'),
  ).action(async (flags: ListFlags) => {
    process.exitCode = await list(flags);
  });

  dlqCommand(
    dlq
      .command('show')
      .argument('<dlq-seq>', 'sequence of the dead letter in the dead-letter stream (as list prints it)')
      .description(
        'Prints one dead letter in full: where it came from, why, every header, and the payload (as text ' +
          'when it is UTF-8, else base64).',
      ),
  ).action(async (seq: string, flags: DlqFlags) => {
    process.exitCode = await show(seq, flags);
  });

  dlqCommand(
    dlq
      .command('redrive')
      .description(
        "Writes dead letters through their consumer's own sink (the replay path). Those it takes are deleted " +
          'from the dead-letter stream; those it refuses again are kept with the new reason. Asks first ' +
          'unless --yes. Exit 0 when every one was redriven, 1 when some failed again.',
      )
      .option('--consumer <durable>', 'only this consumer’s dead letters')
      .option('--seq <n,n,…>', 'only these DLQ sequences (as list prints them)')
      .option('--batch-size <n>', 'dead letters per sink write', '100')
      .option('--dry-run', 'list what would be redriven and change nothing')
      .option('--yes', 'do not ask for confirmation'),
  ).action(async (flags: RedriveFlags) => {
    process.exitCode = await redrive(flags);
  });

  program.addCommand(dlq);
};

async function list(flags: ListFlags): Promise<number> {
  const limit = intFlag('limit', flags.limit) ?? Infinity;
  return withOperator('dlq', flags, async (ctx) => {
    const nc = await ctx.hub();
    const stream = dlqStreamOf(ctx, flags);
    const selection = { stream, consumer: flags.consumer };
    const tally = new DeadLetterTally();
    let listed = 0;
    // Rows go out as they are read: the stream may hold a GiB of dead letters. With --json the
    // report is still one JSON object, written piece by piece.
    const out = (text: string): boolean => process.stdout.write(text);
    if (flags.json)
      out(
        `{"stream":${JSON.stringify(stream)},"consumer":${JSON.stringify(flags.consumer ?? null)},"deadLetters":[`,
      );
    else out(`${LIST_HEADER}\n`);
    for await (const letter of listDeadLetters(nc, selection, { signal: ctx.signal })) {
      tally.add(letter);
      if (listed >= limit) continue;
      if (flags.json) out(`${listed > 0 ? ',' : ''}${JSON.stringify(letter)}`);
      else out(`${listRow(letter)}\n`);
      listed++;
    }
    if (flags.json) out(`],"listed":${listed},${JSON.stringify(tally).slice(1)}\n`);
    else out(`${describeTally(stream, tally, listed)}\n`);
    return ExitCode.ok;
  });
}

const LIST_HEADER = [
  'DLQ-SEQ'.padStart(8),
  'CONSUMER'.padEnd(16),
  'SEQ'.padStart(10),
  'SUBJECT'.padEnd(36),
  'DELIV',
  'DEAD-LETTERED AT'.padEnd(24),
  'REASON',
].join('  ');

const listRow = (l: DeadLetterSummary): string =>
  [
    String(l.dlqSeq).padStart(8),
    l.consumer.padEnd(16),
    String(l.seq ?? '?').padStart(10),
    l.subject.padEnd(36),
    String(l.deliveries ?? '?').padStart(5),
    l.deadLetteredAt.padEnd(24),
    l.reason,
  ].join('  ');

const letters = (n: number): string => `${n} dead letter${n === 1 ? '' : 's'}`;

const counts = (byName: Record<string, number>): string =>
  Object.entries(byName)
    .sort(([a], [b]) => a.localeCompare(b))
    .map(([name, n]) => `${name} ${n}`)
    .join(', ');

export function describeTally(stream: string, tally: DeadLetterTally, listed: number): string {
  if (tally.total === 0) return `no dead letters in ${stream}`;
  const shown = listed < tally.total ? ` (${listed} listed)` : '';
  return (
    `${letters(tally.total)} in ${stream}${shown}; by consumer: ${counts(tally.byConsumer)}; ` +
    `by reason: ${counts(tally.byReason)}`
  );
}

async function show(seqText: string, flags: DlqFlags): Promise<number> {
  const dlqSeq = Number(seqText);
  if (!Number.isSafeInteger(dlqSeq) || dlqSeq < 1)
    throw new UsageError(`<dlq-seq> must be a positive integer, got ${seqText}`);
  return withOperator('dlq', flags, async (ctx) => {
    const stream = dlqStreamOf(ctx, flags);
    const letter = await getDeadLetter(await ctx.hub(), stream, dlqSeq);
    if (!letter) {
      process.stderr.write(`switchyard: no dead letter at sequence ${dlqSeq} of ${stream}\n`);
      return ExitCode.failure;
    }
    const { payload, ...rest } = letter;
    ctx.report({ ...rest, payloadBytes: payload.byteLength, ...payloadText(payload) }, () =>
      describeLetter(stream, letter),
    );
    return ExitCode.ok;
  });
}

export function describeLetter(stream: string, l: DeadLetterDetail): string {
  const text = payloadText(l.payload);
  const lines = [
    `dead letter ${l.dlqSeq} of ${stream} (${l.dlqSubject})`,
    `  consumer:          ${l.consumer}`,
    `  original:          ${l.stream || '?'} sequence ${l.seq ?? '?'}, ${l.subject}`,
    `  reason:            ${l.reason}`,
    `  deliveries:        ${l.deliveries ?? '?'}`,
    `  dead-lettered at:  ${l.deadLetteredAt}`,
    'headers:',
  ];
  for (const [key, values] of Object.entries(l.headers)) for (const v of values) lines.push(`  ${key}: ${v}`);
  lines.push(
    `payload (${l.payload.byteLength} bytes, ${text.payloadEncoding === 'utf8' ? 'UTF-8' : 'not UTF-8: base64'}):`,
    text.payload,
  );
  return lines.join('\n');
}

/** `--seq 5,7,9` as numbers; UsageError naming the first bad one. */
function seqList(text: string | undefined): number[] | undefined {
  if (text === undefined) return undefined;
  const seqs = text
    .split(',')
    .map((s) => s.trim())
    .filter((s) => s !== '')
    .map((s) => intFlag('seq', s)!);
  if (seqs.length === 0) throw new UsageError('--seq needs one or more DLQ sequences, e.g. --seq 5,7');
  return seqs;
}

async function redrive(flags: RedriveFlags): Promise<number> {
  const seqs = seqList(flags.seq);
  const batchSize = intFlag('batch-size', flags.batchSize);
  // Refuse before connecting anywhere: nothing could be confirmed anyway.
  if (!flags.dryRun && !flags.yes && !process.stdin.isTTY)
    throw new UsageError('redrive changes the dead-letter stream: no terminal to ask; run again with --yes');
  return withOperator('dlq', flags, async (ctx) => {
    const nc = await ctx.hub();
    const plan = await planRedrive(nc, { stream: dlqStreamOf(ctx, flags), consumer: flags.consumer, seqs });
    process.stderr.write(`${describeRedrivePlan(plan)}\n`);
    const ask = !flags.dryRun && plan.selected > 0;
    if (ask && !(await confirm(`redrive ${letters(plan.selected)}`, { yes: flags.yes }))) {
      process.stderr.write('nothing changed\n');
      return ExitCode.ok;
    }
    const progress = flags.dryRun
      ? undefined
      : createProgress({ label: 'redrive', unit: 'dead letters', total: plan.selected });
    let report: RedriveReport;
    try {
      report = await redriveDeadLetters({
        nc,
        plan,
        sinks: sinksOf(ctx),
        log: ctx.log,
        batchSize,
        progress,
        signal: ctx.signal,
        dryRun: flags.dryRun,
      });
    } finally {
      progress?.stop();
    }
    ctx.report(report, () => describeRedriveReport(report));
    return report.failedCount > 0 ? ExitCode.failure : ExitCode.ok;
  });
}

const sinksOf = (ctx: OperatorContext) => ({
  config: (consumer: string, overrides: Record<string, unknown>) => ctx.consumerConfig(consumer, overrides),
  open: (consumer: string, overrides: Record<string, unknown>) => ctx.openSink(consumer, overrides),
});

export function describeRedrivePlan(p: RedrivePlan): string {
  if (!p.exists) return `no dead-letter stream ${p.stream}: nothing was ever dead-lettered`;
  const of = p.consumer ? ` of consumer ${p.consumer}` : '';
  const which = p.seqs ? `sequences ${p.seqs.join(', ')}` : letters(p.selected);
  return `redrive ${which}${of} from ${p.stream} (up to sequence ${p.toSeq})`;
}

export function describeRedriveReport(r: RedriveReport): string {
  const lines = [
    r.dryRun
      ? `dry run: would redrive ${r.redrivenCount} of ${letters(r.selected)}, ${r.skippedCount} skipped`
      : `${r.redrivenCount} of ${letters(r.selected)} redriven, ${r.failedCount} failed again, ` +
        `${r.skippedCount} skipped`,
  ];
  for (const x of r.redriven)
    lines.push(
      `  ${r.dryRun ? 'would redrive' : 'redriven'} ${x.dlqSeq} (${x.consumer} seq ${x.seq} ${x.subject})`,
    );
  for (const x of r.failed)
    lines.push(
      `  failed ${x.dlqSeq} (${x.consumer} seq ${x.seq}): ${x.reason}; ` +
        (x.kept === 'replaced' ? `kept as ${x.replacedBy}` : 'kept unchanged'),
    );
  for (const x of r.skipped) lines.push(`  skipped ${x.dlqSeq}: ${x.reason}`);
  const more =
    r.redrivenCount + r.failedCount + r.skippedCount - r.redriven.length - r.failed.length - r.skipped.length;
  if (more > 0) lines.push(`  … and ${more} more (the counts cover them all)`);
  return lines.join('\n');
}
