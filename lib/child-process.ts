/** Child processes that do not outlive the process that started them. */
import { existsSync } from 'node:fs';

/** util-linux, part of every Debian install. */
const SETPRIV = '/usr/bin/setpriv';

/**
 * The command line of a child that dies with this process, however this process ends: killed with
 * SIGKILL included, where no `exit` handler runs. `setpriv --pdeathsig` asks the kernel to send the
 * child SIGKILL when its parent dies, then runs the command in its place (same PID). Without
 * setpriv (not Linux), the command as given: the caller's `exit` handler is then all there is.
 */
export function dyingWithParent(command: string, args: readonly string[]): [string, string[]] {
  if (!existsSync(SETPRIV)) return [command, [...args]];
  return [SETPRIV, ['--pdeathsig', 'SIGKILL', '--', command, ...args]];
}
