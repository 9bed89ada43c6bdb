/** Exit codes every `switchyard` command keeps. */
export const ExitCode = { ok: 0, failure: 1, usage: 2 } as const;

/** Bad flags, bad config or a bad argument: the command exits 2 with `message` on one line. */
export class UsageError extends Error {
  override name = 'UsageError';
}

/** Several configuration problems, reported all at once. */
export class ConfigError extends UsageError {
  override name = 'ConfigError';
  constructor(readonly problems: readonly string[]) {
    super(`bad config: ${problems.join('; ')}`);
  }
}

/** Error message of anything thrown, with its causes. */
export function describeError(err: unknown): string {
  if (!(err instanceof Error)) return String(err);
  const parts = [err.message];
  let cause = err.cause;
  for (let depth = 0; cause && depth < 4; depth++) {
    parts.push(cause instanceof Error ? cause.message : String(cause));
    cause = cause instanceof Error ? cause.cause : undefined;
  }
  return parts.join(': ');
}
