/** Running `switchyard` commands as real child processes, the way operators run them. */
import { spawn, type ChildProcess } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { dyingWithParent } from '../../lib/child-process.ts';
import { childEnv } from '../../lib/env.ts';

export const SWITCHYARD_BIN = fileURLToPath(new URL('../../bin/switchyard.mjs', import.meta.url));
/** The compiled entry point (`npm run build`), as production runs it. */
export const SWITCHYARD_DIST = fileURLToPath(new URL('../../dist/cli/main.js', import.meta.url));

export interface SwitchyardProcess {
  child: ChildProcess;
  /** Everything it printed so far (stdout and stderr). */
  output(): string;
  /** What it printed on stdout alone (a command's report, without the progress and logs of stderr). */
  stdout(): string;
  /** Resolves with the exit code (or signal name) once it exited. */
  exited: Promise<number | string>;
  /** Sends `signal` and waits for the exit. */
  stop(signal?: NodeJS.Signals): Promise<number | string>;
}

/**
 * Starts `switchyard <args>` with `env` added to this process's environment; `compiled` runs the
 * build in dist/ (as deployed) instead of the sources.
 */
export function startSwitchyard(
  args: string[],
  env: Record<string, string> = {},
  options: { compiled?: boolean; nodeOptions?: string[]; entry?: string } = {},
): SwitchyardProcess {
  // `entry`: another script run the same way (a fixture built on the CLI's modules).
  const entry = options.entry ?? (options.compiled ? SWITCHYARD_DIST : SWITCHYARD_BIN);
  // A test process that dies, even killed, must not leave the command running.
  const [command, commandArgs] = dyingWithParent(process.execPath, [
    ...(options.nodeOptions ?? []),
    entry,
    ...args,
  ]);
  // Tests own plain servers on loopback; a test of the secure setup passes SWITCHYARD_INSECURE=false.
  const child = spawn(command, commandArgs, {
    env: childEnv({ SWITCHYARD_INSECURE: 'true', ...env }),
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  const reap = (): void => void child.kill('SIGKILL');
  process.once('exit', reap);
  child.once('exit', () => process.off('exit', reap));
  let text = '';
  let stdout = '';
  child.stdout!.on('data', (d: Buffer) => {
    text += d.toString();
    stdout += d.toString();
  });
  child.stderr!.on('data', (d: Buffer) => (text += d.toString()));
  const exited = new Promise<number | string>((resolve) =>
    child.once('exit', (code, signal) => resolve(code ?? signal ?? -1)),
  );
  return {
    child,
    output: () => text,
    stdout: () => stdout,
    exited,
    async stop(signal: NodeJS.Signals = 'SIGTERM') {
      if (child.exitCode === null && child.signalCode === null) child.kill(signal);
      return exited;
    },
  };
}

/** Runs `switchyard <args>` to completion. */
export async function runSwitchyard(args: string[], env: Record<string, string> = {}) {
  const p = startSwitchyard(args, env);
  const code = await p.exited;
  return { code, output: p.output(), stdout: p.stdout() };
}

/** Value of one Prometheus sample (`name{labels}`) from a /metrics endpoint, 0 if absent. */
export async function metricValue(opsUrl: string, sample: string): Promise<number> {
  const text = await (await fetch(`${opsUrl}/metrics`)).text();
  for (const line of text.split('\n')) {
    if (line.startsWith(`${sample} `)) return Number(line.slice(sample.length + 1));
  }
  return 0;
}

/**
 * Runs `switchyard <args> --json` to completion: the exit code, everything printed, and the report
 * (the last line of stdout, parsed; undefined if there is none).
 */
export async function runReport(args: string[], env: Record<string, string> = {}) {
  const { code, output, stdout } = await runSwitchyard([...args, '--json'], env);
  const last = stdout.trim().split('\n').at(-1) ?? '';
  // eslint-disable-next-line @typescript-eslint/no-explicit-any -- a report's shape is the command's
  const report: any = last.startsWith('{') ? JSON.parse(last) : undefined;
  return { code, output, report };
}
