/**
 * Confirmation of a command that changes something: `--yes` answers for the operator; a terminal is
 * asked; without a terminal the command refuses (exit 2) rather than wait for an answer that
 * cannot come.
 */
import { createInterface } from 'node:readline/promises';
import { UsageError } from './errors.ts';

/** Resolves true to go ahead, false when the operator said no; throws UsageError without a terminal. */
export async function confirm(question: string, options: { yes?: boolean } = {}): Promise<boolean> {
  if (options.yes) return true;
  if (!process.stdin.isTTY)
    throw new UsageError(`${question}: no terminal to ask; run again with --yes to go ahead`);
  const rl = createInterface({ input: process.stdin, output: process.stderr });
  try {
    const answer = await rl.question(`${question} [y/N] `);
    return /^y(es)?$/i.test(answer.trim());
  } finally {
    rl.close();
  }
}
